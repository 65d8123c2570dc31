"""Shard and manifest format: exact round trip, atomic appearance, clear errors naming the file."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from mofdft_jax.data import shards
from mofdft_jax.data.shards import DatasetError
from mofdft_jax.qchem.labels import MoleculeLabels, TEST_SETTINGS

from synthetic_labels import synthetic_labels  # noqa: E402  (tests/data is on sys.path)


def assert_labels_equal(a: MoleculeLabels, b: MoleculeLabels, *, wall=True):
    assert a.molecule.name == b.molecule.name
    np.testing.assert_array_equal(a.molecule.numbers, b.molecule.numbers)
    np.testing.assert_array_equal(a.molecule.coords_bohr, b.molecule.coords_bohr)
    assert (a.molecule.charge, a.molecule.spin) == (b.molecule.charge, b.molecule.spin)
    # resource settings (max_memory_mb) are not part of a shard
    assert {k: v for k, v in json.loads(json.dumps(a.settings)).items()
            if k not in shards.RUN_ONLY_SETTINGS} == b.settings
    assert a.n_steps == b.n_steps and a.converged == b.converged
    for key in ("coeffs", "ts", "ts_grad", "p_ref", "hf_forces_ref"):
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)  # bitwise
    for key in ("targets", "target_grads", "step_energies", "init_coeffs", "ks_energy"):
        x, y = getattr(a, key), getattr(b, key)
        assert set(x) == set(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
            assert type(np.asarray(x[k]).item(0)) is type(np.asarray(y[k]).item(0))
    if wall:
        assert a.wall_s == b.wall_s


def test_round_trip_is_exact(tmp_path, rng):
    labels = synthetic_labels(rng)
    path = tmp_path / shards.shard_file_name(0, "water")
    info = shards.write_shard(path, labels, meta={"conformer_id": 3})
    assert info["file"] == "000000_water.h5" and info["n_steps"] == 4
    assert info["sha256"] == shards.file_sha256(path)
    back = shards.read_shard(path, wall_s=1.25)
    assert isinstance(back, MoleculeLabels)
    assert_labels_equal(labels, back)
    assert isinstance(back.ks_energy["e_tot"], float) and isinstance(back.n_steps, int)
    assert shards.read_shard_meta(path) == {"conformer_id": 3}
    # the run-dependent wall time is not in the shard: NaN unless the manifest supplies it
    assert np.isnan(shards.read_shard(path).wall_s)


def test_equal_labels_give_byte_identical_shards(tmp_path):
    other = synthetic_labels(np.random.default_rng(20240210), wall_s=99.0)
    labels = synthetic_labels(np.random.default_rng(20240210), wall_s=1.0)
    a = shards.write_shard(tmp_path / "000000_a.h5", labels)
    b = shards.write_shard(tmp_path / "000001_a.h5", other)
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "000000_a.h5").read_bytes() == (tmp_path / "000001_a.h5").read_bytes()


def test_temporaries_are_never_visible_as_shards(tmp_path, rng, monkeypatch):
    labels = synthetic_labels(rng)
    path = tmp_path / "000000_water.h5"
    seen = []

    real_replace = os.replace

    def spy_replace(src, dst):
        # at the moment of the rename the complete file exists only under its hidden name
        seen.extend(sorted(os.listdir(tmp_path)))
        assert not path.exists()
        real_replace(src, dst)

    monkeypatch.setattr(shards.os, "replace", spy_replace)
    shards.write_shard(path, labels)
    assert len(seen) == 1 and seen[0].startswith(".000000_water.h5.tmp-")
    assert not shards.is_shard_file_name(seen[0])
    assert os.listdir(tmp_path) == ["000000_water.h5"]

    # a writer that dies mid-way leaves no shard and no temporary behind
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(shards, "_write_value", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        shards.write_shard(tmp_path / "000001_water.h5", labels)
    assert os.listdir(tmp_path) == ["000000_water.h5"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".000003_x.h5.tmp-123-abcd").write_bytes(b"half a shard")
    (tmp_path / "000002_y.h5").write_bytes(b"")
    assert shards.remove_stale_temporaries(tmp_path) == [".000003_x.h5.tmp-123-abcd"]
    assert os.listdir(tmp_path) == ["000002_y.h5"]


def test_corrupt_shard_error_names_file(tmp_path, rng):
    path = tmp_path / "000000_water.h5"
    shards.write_shard(path, synthetic_labels(rng))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(DatasetError, match=r"000000_water\.h5: not a readable HDF5 shard"):
        shards.read_shard(path)
    path.write_bytes(b"\x00" * 256)  # garbage
    with pytest.raises(DatasetError, match=r"000000_water\.h5"):
        shards.read_shard(path)


def test_foreign_shards_error_names_file(tmp_path, rng):
    foreign = tmp_path / "000000_other.h5"
    with h5py.File(foreign, "w") as h5:
        h5.create_dataset("x", data=np.ones(3))
    with pytest.raises(DatasetError, match=r"000000_other\.h5: foreign file, not a mofdft_jax"):
        shards.read_shard(foreign)

    future = tmp_path / "000001_water.h5"
    shards.write_shard(future, synthetic_labels(rng))
    with h5py.File(future, "a") as h5:
        h5.attrs["schema_version"] = shards.SCHEMA_VERSION + 1
    with pytest.raises(DatasetError, match=rf"000001_water\.h5: shard schema version "
                                           rf"{shards.SCHEMA_VERSION + 1}"):
        shards.read_shard(future)

    other = tmp_path / "000002_water.h5"
    shards.write_shard(other, synthetic_labels(rng))
    expected = {**TEST_SETTINGS.to_dict(), "basis": "6-31G"}
    with pytest.raises(DatasetError, match=r"000002_water\.h5: shard made with different label "
                                           r"settings \(basis: 'sto-3g' \(expected '6-31G'\)\)"):
        shards.read_shard(other, expected_settings=expected)
    # extra provenance keys in the shard and resource-only settings do not count as a mismatch
    ok = {**TEST_SETTINGS.to_dict(), "max_memory_mb": 1}
    shards.read_shard(other, expected_settings=ok)


def test_manifest_checks(tmp_path, rng):
    settings = TEST_SETTINGS.to_dict()
    mol = synthetic_labels(rng).molecule
    molecules = [{"index": 0, "name": "water", "file": "000000_water.h5",
                  "geometry_sha256": shards.geometry_sha256(mol)}]
    manifest = shards.new_manifest({"name": "t"}, settings, molecules)
    shards.write_json_atomic(tmp_path / shards.MANIFEST_NAME, manifest)
    back = shards.read_manifest(tmp_path)
    shards.check_manifest_compatible(back, settings, molecules, tmp_path / "manifest.json")
    with pytest.raises(DatasetError, match=r"manifest\.json: dataset was made with different "
                                           r"label settings \(grid_level"):
        shards.check_manifest_compatible(back, {**settings, "grid_level": 2}, molecules,
                                         tmp_path / "manifest.json")
    moved = [{**molecules[0], "geometry_sha256": shards.geometry_sha256(
        mol.with_coords(mol.coords_bohr + 0.01))}]
    with pytest.raises(DatasetError, match="different molecule list"):
        shards.check_manifest_compatible(back, settings, moved, tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"manifest\.json: unreadable manifest"):
        shards.read_manifest(tmp_path)
    with pytest.raises(DatasetError, match="no manifest"):
        shards.read_manifest(tmp_path / "nowhere")


def test_verify_detects_bit_flip(tmp_path, rng):
    labels = synthetic_labels(rng)
    info = shards.write_shard(tmp_path / "000000_water.h5", labels)
    manifest = shards.new_manifest({}, labels.settings, [])
    manifest["shards"][info["file"]] = info
    shards.write_json_atomic(tmp_path / shards.MANIFEST_NAME, manifest)
    assert shards.verify_dataset(tmp_path)["shards"] == 1
    raw = bytearray((tmp_path / "000000_water.h5").read_bytes())
    raw[-20] ^= 0xFF  # inside the last dataset's data
    (tmp_path / "000000_water.h5").write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"000000_water\.h5: checksum mismatch"):
        shards.verify_dataset(tmp_path)


def test_shard_names():
    assert shards.shard_file_name(12, "C7H10O2 isomer/3") == "000012_C7H10O2_isomer_3.h5"
    assert shards.is_shard_file_name("000012_x.h5")
    assert not shards.is_shard_file_name(".000012_x.h5.tmp-1-ab")
    assert not shards.is_shard_file_name("manifest.json")
    assert shards.shard_index("000012_x.h5") == 12
