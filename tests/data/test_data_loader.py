"""Training loader: targets, the filter500 rule and the ground-state-only ablation, on synthetic
energies (exact thresholds) and on real KS labels (physical consistency of what the trainer gets)."""

from __future__ import annotations

import numpy as np
import pytest

from mofdft_jax.data import shards
from mofdft_jax.data.loader import (FILTER500_KCAL, count_steps, iter_molecule_steps,
                                    molecule_steps, open_dataset, select_steps)
from mofdft_jax.units import KCAL_TO_HARTREE

from synthetic_labels import synthetic_labels  # noqa: E402  (tests/data is on sys.path)


def _with_energies(labels, excess_kcal):
    """Set step total energies to given excesses (kcal/mol) over the converged energy."""
    e_star = labels.ks_energy["e_tot"]
    labels.step_energies["e_tot"] = e_star + np.asarray(excess_kcal) * KCAL_TO_HARTREE
    return labels


def test_filter500_threshold_is_exact(rng):
    labels = _with_energies(synthetic_labels(rng, n_steps=5), [2000.0, 500.5, 499.5, 3.0, 0.0])
    np.testing.assert_array_equal(select_steps(labels), np.arange(5))
    np.testing.assert_array_equal(select_steps(labels, filter_above_ground_kcal=FILTER500_KCAL),
                                  [2, 3, 4])
    np.testing.assert_array_equal(select_steps(labels, ground_state_only=True), [4])


def test_molecule_steps_selects_target_rows(rng):
    labels = _with_energies(synthetic_labels(rng, n_steps=5), [900.0, 10.0, 5.0, 1.0, 0.0])
    item = molecule_steps(labels, "000000_water.h5", "txc", filter_above_ground_kcal=500.0)
    np.testing.assert_array_equal(item.steps, [2, 3, 4, 5])
    np.testing.assert_array_equal(item.coeffs, labels.coeffs[1:])
    np.testing.assert_array_equal(item.energy, labels.targets["txc"][1:])
    np.testing.assert_array_equal(item.grad, labels.target_grads["txc"][1:])
    assert item.energy_ref == labels.targets["txc"][-1]
    ts = molecule_steps(labels, "f", "ts", ground_state_only=True)
    np.testing.assert_array_equal(ts.energy, labels.ts[-1:])
    np.testing.assert_array_equal(ts.grad, labels.ts_grad[-1:])
    with pytest.raises(ValueError, match="unknown target 'kedf'"):
        molecule_steps(labels, "f", "kedf")


@pytest.fixture(scope="module")
def water_dataset(tmp_path_factory):
    """A real one-molecule dataset (water, STO-3G, grid 0) written by generate_dataset."""
    from mofdft_jax.data.generate import generate_dataset
    from mofdft_jax.data.recipes import load_recipe, recipe_tasks

    out = tmp_path_factory.mktemp("water")
    recipe = load_recipe("smoke", "quick")
    summary = generate_dataset(recipe_tasks(recipe)[:1], recipe.label_settings(), out,
                               recipe=recipe.to_dict(), workers=0, progress=False)
    assert summary.molecules_done == 1
    return open_dataset(out)


def test_real_labels_through_the_loader(water_dataset):
    ds = water_dataset
    assert ds.files == ["000000_water.h5"] and len(ds) == 1
    labels = ds.read("000000_water.h5")
    assert labels.converged and labels.wall_s == pytest.approx(ds.entry(ds.files[0])["wall_s"])
    assert count_steps(ds) == labels.n_steps >= 3
    (item,) = list(iter_molecule_steps(ds, target="tot"))
    # the last labelled step is the converged KS density p*, its total-energy label the KS energy
    np.testing.assert_array_equal(item.coeffs[-1], item.p_ref)
    assert item.energy[-1] == pytest.approx(labels.ks_energy["e_tot"], abs=1e-8)
    # every fitted density holds the molecule's 10 electrons (w·p = N to the fit's accuracy)
    from mofdft_jax.qchem.basis import make_auxbasis, make_auxmol, make_mol
    from mofdft_jax.qchem.integrals import compute_aux_norm

    auxmol = make_auxmol(make_mol(labels.molecule, ds.label_settings["basis"]), make_auxbasis())
    w = compute_aux_norm(auxmol)
    assert item.coeffs.shape[1] == auxmol.nao_nr() == w.shape[0]
    np.testing.assert_allclose(item.coeffs @ w, 10.0, atol=2e-2)
    # filter500 keeps the converged step and drops nothing below the threshold
    excess = (labels.step_energies["e_tot"] - labels.ks_energy["e_tot"]) / KCAL_TO_HARTREE
    (kept,) = list(iter_molecule_steps(ds, filter_above_ground_kcal=500.0))
    np.testing.assert_array_equal(kept.steps - 1, np.flatnonzero(excess <= 500.0))
    assert kept.steps[-1] == labels.n_steps
    (gs,) = list(iter_molecule_steps(ds, ground_state_only=True))
    assert gs.n_steps == 1 and gs.steps[0] == labels.n_steps


def test_reading_a_shard_with_foreign_settings_through_the_dataset_fails(water_dataset, rng,
                                                                          tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(water_dataset.directory, copy)
    foreign = synthetic_labels(rng)  # settings of TEST_SETTINGS, not of this dataset
    foreign.settings["grid_level"] = 3
    shards.write_shard(copy / "000000_water.h5", foreign)
    with pytest.raises(shards.DatasetError, match=r"000000_water\.h5: shard made with different "
                                                  r"label settings \(grid_level: 3"):
        open_dataset(copy).read("000000_water.h5")
