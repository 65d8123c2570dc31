"""reproduce.pipeline: cached, resumable datasets and checkpoints; evaluation with the paper's
protocol (energies/forces against the labels' KS references); the relative-energy metrics.

Everything runs on the test-only micro system (water conformers, STO-3G, grid level 0) so the
whole file takes seconds of compute; the numbers are checked against independent evaluations, not
against the paper.
"""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from mofdft_jax.data.loader import open_dataset
from mofdft_jax.data.splits import make_splits
from mofdft_jax.units import HA_PER_BOHR_TO_KCAL_PER_ANGSTROM, HARTREE_TO_KCAL
from reproduce import pipeline as pl
from reproduce.runner import RunContext

WATER = {"recipe": "ethanol_thermal", "preset": "quick",
         "source": {"smiles": "O", "name": "water", "count": 5},
         "labels": {"basis": "sto-3g", "grid_level": 0}}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    return RunContext(preset="micro", out_dir=root / "out", cache_dir=root / "cache",
                      progress=False)


@pytest.fixture(scope="module")
def spec():
    return pl.DatasetSpec.from_config(WATER)


@pytest.fixture(scope="module")
def data(ctx, spec):
    """Labelled in two calls: two molecules first, then the rest (resume)."""
    first = pl.ensure_dataset(ctx, spec, max_molecules=2)
    stamps = {f: (first.path / f).stat().st_mtime_ns for f in first.files}
    full = pl.ensure_dataset(ctx, spec)
    return first, stamps, full


def test_spec_key_depends_on_overrides_only(spec):
    same = pl.DatasetSpec.from_config(json.loads(json.dumps(WATER)))
    assert same.key() == spec.key()
    other = pl.DatasetSpec.from_config({**WATER, "source": {**WATER["source"], "count": 6}})
    assert other.key() != spec.key()
    assert spec.key().startswith("ethanol_thermal-quick-")
    with pytest.raises(ValueError, match="unknown key"):
        pl.DatasetSpec.from_config({**WATER, "count": 3})


def test_dataset_resumes_without_relabelling(ctx, data):
    first, stamps, full = data
    assert len(first.files) == 2 and full.path == first.path
    assert len(full.files) == 6 and not full.failures
    # the shards of the first call were kept as they were, not relabelled
    assert {f: (full.path / f).stat().st_mtime_ns for f in first.files} == stamps
    again = pl.ensure_dataset(ctx, full.spec)
    assert again.fingerprint == full.fingerprint and again.splits == full.splits
    assert {f: (full.path / f).stat().st_mtime_ns for f in first.files} == stamps


def test_splits_are_the_trainers_split(data, spec):
    _, _, full = data
    assert full.splits == make_splits(open_dataset(full.path))
    recipe = spec.resolve()
    from mofdft_jax.data.recipes import recipe_tasks

    assert pl.recipe_splits(recipe, recipe_tasks(recipe)) == full.splits
    assert sum(len(v) for v in full.splits.values()) == 6
    assert pl.reference_file(full) == "000000_water_minimum.h5"


def test_only_split_labels_held_out_molecules_and_reference(tmp_path, data):
    _, _, full = data
    ctx = RunContext(preset="micro", out_dir=tmp_path, cache_dir=tmp_path / "cache",
                     progress=False)
    part = pl.ensure_dataset(ctx, full.spec, only_split="test", include_reference=True)
    assert set(part.files) == set(full.splits["test"]) | {"000000_water_minimum.h5"}
    # partial dataset: splits follow the whole recipe, restricted to what was labelled
    assert part.splits["test"] == full.splits["test"]
    assert set(part.splits["train"]) <= {"000000_water_minimum.h5"}
    # the same labels as in the fully labelled folder: identical up to the last bits that
    # multi-threaded BLAS reductions in PySCF leave run-dependent (with OMP_NUM_THREADS=1 the
    # shards are byte-identical; measured differences with 2 threads: <= 1e-11 Ha)
    for f in part.files:
        a, b = _shard_arrays(full.path / f), _shard_arrays(part.path / f)
        assert a.keys() == b.keys()
        for key in a:
            if a[key].dtype.kind in "fc":
                np.testing.assert_allclose(a[key], b[key], rtol=1e-9, atol=1e-9, err_msg=key)
            else:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _shard_arrays(path) -> dict:
    """Every dataset and attribute of an HDF5 shard as a NumPy array, by path."""
    import h5py

    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = np.asarray(obj[()])
        for k, v in obj.attrs.items():
            out[f"{name}@{k}"] = np.asarray(v)

    with h5py.File(path, "r") as handle:
        handle.visititems(visit)
        for k, v in handle.attrs.items():
            out[f"@{k}"] = np.asarray(v)
    return out


@pytest.fixture(scope="module")
def checkpoint(ctx, data):
    _, _, full = data
    spec = pl.ModelSpec.from_config({"config": "tiny", "epochs": 1, "batch_size": 16},
                                    target="ts_res")
    return full, spec, pl.ensure_checkpoint(ctx, full, spec)


def test_checkpoint_is_trained_once(ctx, checkpoint, monkeypatch):
    full, spec, ck = checkpoint
    assert ck.stem.with_name(ck.stem.name + ".eqx").is_file()
    assert ck.stem.with_name(ck.stem.name + ".done.json").is_file()
    assert ck.summary["n_train_molecules"] == len(full.splits["train"])
    assert ck.summary["epochs"] == 1
    import mofdft_jax.commands.train as train_cmd

    def boom(*a, **k):
        raise AssertionError("a finished checkpoint must not be retrained")

    monkeypatch.setattr(train_cmd, "run_train", boom)
    again = pl.ensure_checkpoint(ctx, full, spec)
    assert again.stem == ck.stem and again.weights_sha256 == ck.weights_sha256
    # a different seed or ablation is a different model
    other = pl.ModelSpec.from_config({"config": "tiny", "epochs": 1, "batch_size": 16},
                                     target="ts_res", ablations=["no_grad_labels"])
    assert other.tag() == "tiny-ts_res-no_grad_labels"
    with pytest.raises(AssertionError, match="must not be retrained"):
        pl.ensure_checkpoint(ctx, full, other)
    with pytest.raises(ValueError, match="unknown ablation"):
        pl.ModelSpec.from_config({}, ablations=["no_frames"])
    with pytest.raises(ValueError, match="unknown training option"):
        pl.ModelSpec.from_config({"epoch": 3})


def test_evaluate_matches_direct_solve_and_caches(ctx, checkpoint):
    from mofdft_jax.qchem.basis import make_auxmol, make_mol
    from mofdft_jax.qchem.guesses import minao_guess
    from mofdft_jax.qchem.integrals import build_integral_bundle
    from mofdft_jax.solver import hf_forces, make_energy_fn, solve

    full, _, ck = checkpoint
    file = full.splits["test"][0]
    runs = [pl.Run(pl.classical_method("tf+1/9vw", lr=5e-4), "minao"),
            pl.Run(pl.learned_method(ck, "M-OFDFT"), "projminao")]
    ev = pl.evaluate(full, [file], runs, steps=10, cache_dir=ctx.preset_cache, progress=False)
    assert list(ev.frame.columns) == pl.EVAL_COLUMNS and len(ev.frame) == 2 and ev.cached == 0
    row = ev.frame.iloc[0]

    # the classical row, recomputed by hand from the shard
    labels = open_dataset(full.path).read(file)
    mol = make_mol(labels.molecule, "sto-3g")
    auxmol = make_auxmol(mol)
    bundle = build_integral_bundle(mol, auxmol, grid_level=0, with_overlap=False)
    res = solve(make_energy_fn("tf+1/9vw", xc="pbe")[0], minao_guess(mol, auxmol).coeffs,
                bundle, steps=10, lr=5e-4, rule="iid")
    assert row["energy_ha"] == pytest.approx(res.energy, abs=1e-9)
    assert row["energy_ks_ha"] == labels.ks_energy["e_tot"]
    assert row["energy_error_kcal"] == pytest.approx(
        (res.energy - labels.ks_energy["e_tot"]) * HARTREE_TO_KCAL, abs=1e-6)
    force_mae = np.mean(np.abs(np.asarray(hf_forces(res.coeffs, bundle)) - labels.hf_forces_ref))
    assert row["force_mae_kcal_per_angstrom"] == pytest.approx(
        force_mae * HA_PER_BOHR_TO_KCAL_PER_ANGSTROM, rel=1e-6)
    assert row["chosen_step"] == res.chosen_step and row["lr"] == 5e-4
    np.testing.assert_allclose(ev.coeffs[("TF+1/9vW", "minao", file)], res.coeffs, atol=1e-10)

    learned = ev.frame.iloc[1]
    assert learned["target"] == "ts_res" and learned["lr"] == 5e-4  # ethanol-family default
    assert np.isfinite(learned["energy_ha"]) and 0 <= learned["chosen_step"] <= 10

    # second call: everything from the cache, identical numbers
    again = pl.evaluate(full, [file], runs, steps=10, cache_dir=ctx.preset_cache, progress=False)
    assert again.cached == 2
    pd.testing.assert_frame_equal(again.frame, ev.frame)
    # refresh recomputes: same numbers (deterministic), only the wall times differ
    fresh = pl.evaluate(full, [file], runs, steps=10, cache_dir=ctx.preset_cache, refresh=True,
                        progress=False)
    assert fresh.cached == 0
    cols = [c for c in pl.EVAL_COLUMNS if c not in pl.TIMING_COLUMNS]
    pd.testing.assert_frame_equal(fresh.frame[cols], ev.frame[cols])


def test_relative_metrics_on_constructed_frame():
    k = 1.0 / HARTREE_TO_KCAL
    base = {"dataset": "d", "method": "m", "init": "i"}
    frame = pd.DataFrame([
        {**base, "file": "ref", "energy_ha": 1.0 * k, "energy_ks_ha": 0.0, "isomer_group": "A"},
        {**base, "file": "a", "energy_ha": 4.0 * k, "energy_ks_ha": 2.0 * k, "isomer_group": "A"},
        {**base, "file": "b", "energy_ha": -1.0 * k, "energy_ks_ha": 1.0 * k, "isomer_group": "A"},
        {**base, "file": "c", "energy_ha": 0.0, "energy_ks_ha": 0.0, "isomer_group": "B"},
    ])
    rel = pl.relative_to_reference(frame, "ref")
    # a: (4-1) - (2-0) = 1; b: (-1-1) - (1-0) = -3; c: (0-1) - 0 = -1
    assert dict(zip(rel["file"], rel["rel_error_kcal"].round(12))) == {"a": 1.0, "b": -3.0,
                                                                       "c": -1.0}
    pairs = pl.isomer_pair_errors(frame)
    # group A pairs: (a,b): (5)-(1)=4; (a,ref): 3-2=1; (b,ref): -2-1=-3; group B has one member
    got = {(r.file_i, r.file_j): round(r.rel_error_kcal, 12) for r in pairs.itertuples()}
    assert got == {("a", "b"): 4.0, ("a", "ref"): 1.0, ("b", "ref"): -3.0}
    mae = pl.absolute_mae(frame.assign(energy_error_kcal=[1.0, -2.0, 3.0, 0.0],
                                       force_mae_kcal_per_angstrom=1.0, solve_wall_s=0.0))
    assert mae["energy_mae_kcal"].iloc[0] == pytest.approx(1.5) and mae["n"].iloc[0] == 4
    mean, half = pl.mean_ci95([1.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(1.96 * np.sqrt(2.0) / np.sqrt(2.0))


def test_methods_and_checkpoint_resolution(tmp_path):
    with pytest.raises(ValueError, match="either classical"):
        pl.Method(name="x")
    with pytest.raises(ValueError, match="unknown kinetic"):
        pl.classical_method("lda")
    assert pl.classical_method("tf+1/9vw").name == "TF+1/9vW"
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        pl.resolve_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="shipped"):
        pl.resolve_checkpoint("shipped:does_not_exist")
    assert dataclasses.asdict(pl.ModelSpec.from_config({"config": "tiny", "epochs": 2}))[
        "train"] == (("epochs", 2),)
