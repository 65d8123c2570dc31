"""Perturbed-potential labels (qchem.perturbation, issue 19 item 1), checked against physics.

Water, PBE/6-31G, grid level 1, the paper's ETB density basis (156 functions).

* The Fock matrix a perturbed step diagonalises is the DIIS combination of earlier Fock matrices
  plus Σ_μ u_μ (αβ|μ) to 1e-10.
* The label formula ∇T_S = −(v_eff + S u): along a family of SCFs converged in the static
  potentials λ·u (λ = 0.9, 1.0, 1.1), the change of the T_S *value* labels equals the gradient
  label dotted into the change of the fitted density (central difference). Measured: relative
  error 2.3e-5 with the S u term, 3.3e-2 without it, so the test tells the two apart.
* At a converged perturbed SCF, P(∇T_S label + ∇E_eff(p) + S u) ≈ 0 with ∇E_eff from the device
  world's jax.grad (measured 2.2e-4 against ‖P S u‖ = 0.11).
* σ = 0 perturbed runs reproduce the plain run's labels; labelling is deterministic.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pyscf import lib

from mofdft_jax.data.loader import molecule_steps
from mofdft_jax.data.shards import read_shard, write_shard
from mofdft_jax.functionals import external_energy, hartree_energy, pbe_xc_energy
from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem.basis import make_auxmol
from mofdft_jax.qchem.integrals import build_integral_bundle
from mofdft_jax.qchem.ksdft import run_ks
from mofdft_jax.qchem.labels import compute_labels, labels_from_run
from mofdft_jax.qchem.perturbation import (FockPerturbation, PerturbationSchedule, overlap_3c,
                                           perturbation_seed)
from mofdft_jax.qchem.settings import LabelSettings

WATER = Molecule.from_angstrom([8, 1, 1], [[0, 0, 0.05], [0, 0.757, 0.587], [0.1, -0.757, 0.587]],
                               name="water")
SETTINGS = LabelSettings(basis="6-31G", grid_level=1)
TIGHT = SETTINGS.replace(conv_tol=1e-10, max_cycle=100)


@pytest.fixture(scope="module")
def plain():
    run = run_ks(WATER, SETTINGS)
    return run, make_auxmol(run.mol)


@pytest.fixture(scope="module")
def perturbed(plain):
    run, auxmol = plain
    pert = FockPerturbation(run.mol, auxmol, PerturbationSchedule(),
                            perturbation_seed(WATER.numbers, WATER.coords_bohr, 1))
    return run_ks(WATER, SETTINGS, mol=run.mol, perturbation=pert)


def test_schedule_values_and_validation():
    sch = PerturbationSchedule(first_step=5, last_step=25, start_std=0.1, end_std=0.002)
    assert sch.std(4) is None and sch.std(26) is None
    assert sch.std(5) == pytest.approx(0.102) and sch.std(25) == pytest.approx(0.002)
    assert sch.std(15) == pytest.approx(0.052)
    with pytest.raises(ValueError):
        PerturbationSchedule(first_step=6, last_step=5)
    with pytest.raises(ValueError):
        LabelSettings(perturbed_runs=1, perturb_last_step=60, max_cycle=50)
    with pytest.raises(ValueError):
        LabelSettings(perturbed_runs=-1)


def test_perturbed_fock_is_diis_combination_plus_potential(plain, perturbed):
    run, auxmol = plain
    tensor = overlap_3c(run.mol, auxmol)
    assert perturbed.converged and perturbed.n_steps > SETTINGS.replace().perturb_last_step
    stds = perturbed.perturbation_std
    assert np.all(stds[:5] == 0) and np.all(stds[26:] == 0) and np.all(stds[5:26] > 0)
    for k in range(1, perturbed.n_steps + 1):
        fock = sum(c * perturbed.focks[j]
                   for c, j in zip(perturbed.diis_weights[k], perturbed.diis_steps[k]))
        fock = fock + lib.unpack_tril(perturbed.perturbation[k] @ tensor)
        np.testing.assert_allclose(perturbed.fock_diag[k], fock, atol=1e-10, rtol=0)
    # the draws really have the scheduled spread (156 samples per step)
    assert np.std(perturbed.perturbation[5]) == pytest.approx(stds[5], rel=0.25)
    # perturbed steps sit above the ground state; the run converges back to it
    excess = perturbed.energies["e_tot"][1:] - run.energies["e_tot"][-1]
    assert np.all(excess > -1e-6) and excess[5:25].max() > 1e-3
    assert perturbed.energies["e_tot"][-1] == pytest.approx(run.energies["e_tot"][-1], abs=1e-5)


@pytest.fixture(scope="module")
def static_family(plain):
    """Converged SCFs in the static potentials λ·u, λ = 0.9, 1.0, 1.1, and their labels."""
    run, auxmol = plain
    u = np.random.default_rng(0).normal(0.0, 0.01, auxmol.nao_nr())
    out = {}
    for lam in (0.9, 1.0, 1.1):
        prun = run_ks(WATER, TIGHT, mol=run.mol,
                      perturbation=FockPerturbation.constant(run.mol, auxmol, lam * u))
        assert prun.converged
        labels = labels_from_run(run, [prun])
        last = prun.n_steps - 1   # last row of the perturbed run (rows: perturbed, then plain)
        out[lam] = {"ts": labels.ts[last], "grad": labels.ts_grad[last],
                    "p": labels.coeffs[last], "run": prun, "labels": labels}
    return u, out


def test_gradient_label_integrates_to_value_labels(plain, static_family):
    _, auxmol = plain
    u, fam = static_family
    d_ts = fam[1.1]["ts"] - fam[0.9]["ts"]
    d_p = fam[1.1]["p"] - fam[0.9]["p"]
    grad = fam[1.0]["grad"]
    s_u = auxmol.intor("int1e_ovlp") @ u
    assert abs(d_ts) > 1e-3
    assert abs(grad @ d_p - d_ts) < 2e-4 * abs(d_ts)
    # without the −S u term of the label the same check fails by ~3 %
    assert abs((grad + s_u) @ d_p - d_ts) > 1e-2 * abs(d_ts)


def test_euler_identity_at_converged_perturbed_scf(plain, static_family):
    run, auxmol = plain
    u, fam = static_family
    bundle = build_integral_bundle(run.mol, auxmol, grid_level=SETTINGS.grid_level,
                                   grids=run.mf.grids, with_overlap=False)

    def e_eff(p, bundle):
        return hartree_energy(p, bundle) + external_energy(p, bundle) + pbe_xc_energy(p, bundle)

    p = fam[1.0]["p"]
    grad_e_eff = np.asarray(jax.jit(jax.grad(e_eff))(jnp.asarray(p), bundle))
    s_u = auxmol.intor("int1e_ovlp") @ u
    w = np.asarray(bundle.norm)
    proj = np.eye(len(w)) - np.outer(w, w) / (w @ w)
    residual = proj @ (fam[1.0]["grad"] + grad_e_eff + s_u)
    assert np.linalg.norm(residual) < 2e-3
    assert np.linalg.norm(proj @ s_u) > 50 * np.linalg.norm(residual)
    # all rows of a static-potential run carry u
    labels = fam[1.0]["labels"]
    rows = labels.run_of_steps() == 1
    np.testing.assert_array_equal(labels.perturbation[rows], np.broadcast_to(u, (rows.sum(), len(u))))


def test_zero_sigma_reproduces_plain_labels(plain):
    run, auxmol = plain
    zero = PerturbationSchedule(first_step=2, last_step=12, start_std=0.0, end_std=0.0)
    prun = run_ks(WATER, SETTINGS, mol=run.mol,
                  perturbation=FockPerturbation(run.mol, auxmol, zero, [0]))
    labels = labels_from_run(run, [prun])
    plain_labels = labels_from_run(run)
    k = run.n_steps - 1  # the plain run's last step is PySCF's extra diagonalisation without DIIS
    assert prun.n_steps >= 12 and labels.n_steps == prun.n_steps + run.n_steps
    np.testing.assert_allclose(labels.coeffs[:k], plain_labels.coeffs[:k], atol=1e-10)
    np.testing.assert_allclose(labels.ts[:k], plain_labels.ts[:k], atol=1e-10)
    np.testing.assert_allclose(labels.ts_grad[:k], plain_labels.ts_grad[:k], atol=1e-9)
    for t in plain_labels.targets:
        np.testing.assert_allclose(labels.target_grads[t][:k], plain_labels.target_grads[t][:k],
                                   atol=1e-9)
    assert not labels.perturbed_steps().any()
    # the plain run's rows come last, unchanged: p* is still the last row
    np.testing.assert_array_equal(labels.coeffs[-run.n_steps:], plain_labels.coeffs)
    np.testing.assert_array_equal(labels.p_ref, plain_labels.p_ref)


def test_compute_labels_with_perturbed_runs(tmp_path):
    settings = SETTINGS.replace(perturbed_runs=2, perturb_first_step=3, perturb_last_step=10)
    labels = compute_labels(WATER, settings)
    again = compute_labels(WATER, settings)
    runs, cycles = labels.run_of_steps(), labels.cycle_of_steps()
    assert list(np.unique(runs)) == [0, 1, 2] and runs[-1] == 0 and np.all(np.diff(runs[runs > 0]) >= 0)
    assert labels.n_steps == len(runs) == labels.ts.shape[0] == labels.coeffs.shape[0]
    np.testing.assert_array_equal(labels.coeffs[-1], labels.p_ref)
    for r in (1, 2):
        # steps 1-2 repeat the plain run's and are not stored again
        cyc = cycles[runs == r]
        np.testing.assert_array_equal(cyc, np.arange(3, len(cyc) + 3))
        pert = labels.perturbed_steps()[runs == r]
        np.testing.assert_array_equal(cyc[pert], np.arange(3, 11))
    # two runs draw different potentials; a rerun draws the same ones (deterministic shards)
    assert not np.allclose(labels.perturbation[runs == 1][3], labels.perturbation[runs == 2][3])
    np.testing.assert_array_equal(labels.perturbation, again.perturbation)
    np.testing.assert_allclose(labels.ts_grad, again.ts_grad, atol=1e-10)  # BLAS threads
    assert labels.settings["perturbed_runs"] == 2
    # shards keep the provenance, the loader reports it
    write_shard(tmp_path / "000000_water.h5", labels)
    back = read_shard(tmp_path / "000000_water.h5")
    np.testing.assert_array_equal(back.step_run, labels.step_run)
    np.testing.assert_array_equal(back.perturbation, labels.perturbation)
    steps = molecule_steps(back, "000000_water.h5", "ts_res")
    np.testing.assert_array_equal(steps.steps, cycles)
    np.testing.assert_array_equal(steps.perturbed, labels.perturbed_steps())
    assert steps.energy_ref == pytest.approx(labels.targets["ts_res"][-1])
