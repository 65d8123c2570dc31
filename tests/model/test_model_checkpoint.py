"""Checkpoints: bit-exact round trip, atomic files, clear errors (mismatches, unseen elements)."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mofdft_jax.density.adapter import NSLOT, AdapterStatistics
from mofdft_jax.model.checkpoint import (CheckpointError, checkpoint_paths, load_checkpoint,
                                         read_checkpoint_metadata, save_checkpoint)
from mofdft_jax.model.functional import UnseenElementError, make_learned_functional
from mofdft_jax.model.graphormer import make_config


def _statistics(rng) -> AdapterStatistics:
    """Arbitrary float64 statistics (full-precision random bits) for H, C, O only."""
    vec = lambda scale: jnp.asarray(rng.normal(size=NSLOT) * scale)  # noqa: E731
    return AdapterStatistics(coeff_mean=vec(1.0), coeff_std=jnp.abs(vec(1.0)), grad_mean=vec(300.0),
                             grad_scale=jnp.abs(vec(5.0)), scale=1.0 + jnp.abs(vec(100.0)),
                             element_offsets=jnp.asarray(rng.normal(size=5) * 1e4),
                             global_offset=jnp.asarray(rng.normal() * 1e3),
                             delta_mean=vec(1e-3), delta_std=jnp.abs(vec(1e-2)),
                             element_seen=jnp.array([True, True, False, True, False]))


@pytest.fixture
def functional(rng):
    return make_learned_functional(make_config("tiny"), _statistics(rng), "txc",
                                   key=jax.random.PRNGKey(5), use_reparam=False)


def test_round_trip_is_bit_exact(functional, tmp_path, rng):
    weights, meta = save_checkpoint(tmp_path / "ckpt", functional, data_fingerprint="sha256:abc",
                                    extra={"epoch": 3, "val_loss": 0.125})
    assert weights.name == "ckpt.eqx" and meta.name == "ckpt.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.eqx", "ckpt.json"]  # no temp left
    loaded, info = load_checkpoint(tmp_path / "ckpt.eqx")
    for a, b in zip(jax.tree.leaves(functional), jax.tree.leaves(loaded), strict=True):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    assert loaded.target == "txc" and loaded.use_reparam is False and loaded.use_local_frames
    assert loaded.config == functional.config
    assert info.data_fingerprint == "sha256:abc" and info.extra == {"epoch": 3, "val_loss": 0.125}
    assert {"mofdft_jax", "jax", "equinox"} <= set(info.versions)
    z = jnp.array([6, 8, 1, 1, 1, 1])
    x = jnp.asarray(rng.normal(size=(6, 3)))
    slots = jnp.asarray(rng.normal(size=(6, NSLOT)))
    apply = eqx.filter_jit(lambda f: f.apply_slots(slots, z, x, with_delta=True))
    e0, d0 = apply(functional)
    e1, d1 = apply(loaded)
    assert float(e0) == float(e1) and np.array_equal(np.asarray(d0), np.asarray(d1))
    # saving again overwrites atomically and gives identical bytes
    before = weights.read_bytes()
    save_checkpoint(tmp_path / "ckpt", loaded, data_fingerprint="sha256:abc",
                    extra={"epoch": 3, "val_loss": 0.125})
    assert weights.read_bytes() == before


def test_mismatched_config_is_a_clear_error(functional, tmp_path):
    save_checkpoint(tmp_path / "ckpt", functional)
    with pytest.raises(CheckpointError, match=r"num_layers=2 \(checkpoint\) vs 4 \(requested\)"):
        load_checkpoint(tmp_path / "ckpt", config=make_config("small"))
    with pytest.raises(CheckpointError, match="target is 'txc', not 'ts_res'"):
        load_checkpoint(tmp_path / "ckpt", target="ts_res")
    # weights that do not fit the stored config (metadata edited to another architecture)
    _, meta_path = checkpoint_paths(tmp_path / "ckpt")
    meta = json.loads(meta_path.read_text())
    meta["config"]["hidden"] = 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError,
                       match="weights do not fit the stored config .*atom_embedding"):
        load_checkpoint(tmp_path / "ckpt")
    meta["config"]["hidden"] = 32
    meta["config"]["num_layers"] = 3
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit the stored config|holds more arrays"):
        load_checkpoint(tmp_path / "ckpt")


def test_weights_from_another_checkpoint_are_detected(functional, tmp_path):
    save_checkpoint(tmp_path / "a", functional)
    other = make_learned_functional(make_config("tiny"), functional.statistics, "txc",
                                    key=jax.random.PRNGKey(6))
    save_checkpoint(tmp_path / "b", other)
    (tmp_path / "a.eqx").write_bytes((tmp_path / "b.eqx").read_bytes())
    with pytest.raises(CheckpointError, match="weights do not match the metadata"):
        load_checkpoint(tmp_path / "a")
    with pytest.raises(CheckpointError, match="checkpoint metadata not found"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "c.json").write_text('{"format": "something else"}')
    with pytest.raises(CheckpointError, match="not a mofdft_jax learned-functional checkpoint"):
        read_checkpoint_metadata(tmp_path / "c")


def test_statistics_travel_with_the_checkpoint(functional, tmp_path):
    save_checkpoint(tmp_path / "ckpt", functional)
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    loaded.check_elements(np.array([6, 8, 1, 1]))
    with pytest.raises(UnseenElementError, match="element N never appeared"):
        loaded.check_elements(np.array([6, 7, 1]))
