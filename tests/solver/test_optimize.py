"""Projected gradient descent (spec §4.2, §4.4) and the reporting rules (spec §4.5).

The physics-free checks use a quadratic "Hartree + external" energy E = ½pᵀAp + bᵀp + E_nn on a
hand-built bundle: its constrained minimiser solves the KKT system [[A, w], [wᵀ, 0]] [p; λ] =
[−b; N] exactly, so convergence is checked against an analytic answer.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import argrelextrema

from mofdft_jax.bundle import IntegralBundle
from mofdft_jax.solver import (
    STATUS_CONVERGED,
    STATUS_DIVERGED,
    STATUS_MAX_STEPS,
    choose_steps,
    progress_handler,
    project_gradient,
    solve,
)
from mofdft_jax.solver import optimize as optimize_mod

NAUX = 40
N_ELECTRONS = 10.0


def make_quadratic_bundle(rng, naux=NAUX, scale=1.0):
    m = rng.normal(size=(naux, naux))
    a = scale * (m @ m.T / naux + 0.5 * np.eye(naux))
    w = np.abs(rng.normal(size=naux)) + 0.1
    b = scale * rng.normal(size=naux)
    return IntegralBundle(
        coulomb=jnp.asarray(a), norm=jnp.asarray(w), v_ext=jnp.asarray(b),
        n_electrons=jnp.asarray(N_ELECTRONS), e_nuc=jnp.asarray(2.5),
        atom_numbers=jnp.asarray([8, 1, 1]), coords=jnp.zeros((3, 3)),
        aux_atom=jnp.zeros(naux, dtype=int), aux_l=jnp.zeros(naux, dtype=int))


def quadratic_terms(p, bundle):
    return {"hartree": 0.5 * p @ bundle.coulomb @ p, "external": bundle.v_ext @ p,
            "nuclear": bundle.e_nuc}


def quadratic_energy(p, bundle):
    return 0.5 * p @ bundle.coulomb @ p + bundle.v_ext @ p + bundle.e_nuc


def constrained_minimiser(bundle):
    a, w, b = (np.asarray(x) for x in (bundle.coulomb, bundle.norm, bundle.v_ext))
    k = np.block([[a, w[:, None]], [w[None, :], np.zeros((1, 1))]])
    return np.linalg.solve(k, np.r_[-b, float(bundle.n_electrons)])[:-1]


def start(bundle, offset=0.0):
    w = np.asarray(bundle.norm)
    return w * (N_ELECTRONS + offset) / (w @ w)


def test_converges_to_analytic_constrained_minimiser(rng):
    bundle = make_quadratic_bundle(rng)
    lam_max = np.linalg.eigvalsh(np.asarray(bundle.coulomb)).max()
    res = solve(quadratic_terms, start(bundle), bundle, steps=2000, lr=1.0 / lam_max, gtol=1e-9)
    p_star = constrained_minimiser(bundle)
    assert res.status == STATUS_CONVERGED, res.message
    assert np.abs(res.coeffs_converged - p_star).max() < 1e-8
    assert np.abs(res.coeffs_final - p_star).max() < 1e-12
    e_star = quadratic_energy(jnp.asarray(p_star), bundle)
    assert abs(res.energy_final - float(e_star)) < 1e-12
    # the terms are recorded and sum to the energy at every state
    traj = res.trajectory
    total = sum(traj.terms.values())
    np.testing.assert_allclose(total, traj.energy, rtol=0, atol=1e-12)
    assert set(res.terms) == {"hartree", "external", "nuclear"}
    # gradient descent with a safe step decreases the energy monotonically
    assert np.all(np.diff(traj.energy) <= 1e-12)
    # the projected gradient is recorded and vanishes at convergence, the full one does not
    assert traj.proj_grad_norm[res.converged_step] < 1e-9 < traj.grad_norm[-1]


def test_electron_count_preserved_to_1e10(rng):
    """Large gradients (scale 1e3), 1000 steps, and an initial guess 0.3 electrons off."""
    bundle = make_quadratic_bundle(rng, scale=1e3)
    lam_max = np.linalg.eigvalsh(np.asarray(bundle.coulomb)).max()
    res = solve(quadratic_energy, start(bundle, offset=0.3), bundle, steps=1000,
                lr=1.9 / lam_max, gtol=0.0, store_coeffs=True)
    assert res.status == STATUS_MAX_STEPS
    assert res.initial_count_error == pytest.approx(0.3, abs=1e-12)
    w = np.asarray(bundle.norm)
    assert np.abs(res.trajectory.n_electrons - N_ELECTRONS).max() < 1e-10
    assert np.abs(res.trajectory.coeffs @ w - N_ELECTRONS).max() < 1e-10
    assert abs(res.coeffs @ w - N_ELECTRONS) < 1e-10
    assert abs(res.coeffs_final @ w - N_ELECTRONS) < 1e-10


def test_projection_is_orthogonal_to_norm_vector(rng):
    w = jnp.asarray(np.abs(rng.normal(size=NAUX)))
    g = jnp.asarray(rng.normal(size=NAUX))
    pg = project_gradient(g, w)
    assert abs(float(w @ pg)) < 1e-13
    np.testing.assert_allclose(project_gradient(pg, w), pg, atol=1e-14)  # idempotent


def test_zero_steps_evaluates_initial_state(rng):
    bundle = make_quadratic_bundle(rng)
    p0 = start(bundle)
    res = solve(quadratic_terms, p0, bundle, steps=0)
    assert res.chosen_step == 0 and res.n_steps == 0
    assert res.energy == pytest.approx(float(quadratic_energy(jnp.asarray(p0), bundle)), abs=1e-12)
    assert len(res.trajectory.energy) == 1 and len(res.trajectory.delta_energy) == 0
    np.testing.assert_allclose(res.coeffs, p0, atol=1e-14)


# --- reporting rules on constructed trajectories ------------------------------------------------

def reference_choice(energy, grad_norm):
    """The released code's selection (evaluate.py / statistic.py), in NumPy/SciPy."""
    delta_e = np.abs(energy[1:] - energy[:-1])
    iid = int(np.argmin(delta_e)) + 1
    gmin = argrelextrema(grad_norm, np.less)[0]
    dmin = argrelextrema(delta_e, np.less)[0] + 1
    if len(gmin):
        ood = int(gmin[0])
    elif len(dmin):
        ood = int(dmin[0])
    else:
        ood = iid
    return iid, ood


def test_iid_rule_reports_state_after_smallest_energy_change():
    energy = np.array([0.0, -5.0, -7.0, -7.5, -7.6, -7.65, -7.3, -7.31, -7.0])
    grad = np.linspace(5.0, 1.0, energy.size)  # monotone: no local minimum
    choice = choose_steps(energy, grad)
    # |dE| = 5, 2, .5, .1, .05, .35, .01, .31 -> argmin 6 -> state 7
    assert choice.iid == 7
    assert choice.iid == reference_choice(energy, grad)[0]


def test_ood_rule_first_local_minimum_of_gradient_norm():
    energy = -np.cumsum([1.0, 0.5, 0.25, 0.2, 0.1, 0.05, 0.01, 0.02, 0.001, 0.3])
    grad = np.array([9.0, 8.0, 8.0, 3.0, 4.0, 2.0, 1.0, 1.5, 0.5, 0.7])  # 8,8 is not strict
    choice = choose_steps(energy, grad)
    assert choice.grad_local_min == 3 and choice.ood == 3
    assert choice.ood_criterion == "first local minimum of the gradient norm"
    assert (choice.iid, choice.ood) == reference_choice(energy, grad)


def test_ood_rule_falls_back_to_energy_change_local_minimum():
    grad = np.linspace(10.0, 1.0, 8)  # strictly decreasing: no interior local minimum
    energy = np.array([0.0, -4.0, -6.0, -6.5, -7.5, -7.6, -7.61, -9.0])
    # |dE| = 4, 2, .5, 1, .1, .01, 1.39: first strict local min at j = 2 -> state 3
    choice = choose_steps(energy, grad)
    assert choice.grad_local_min == -1 and choice.delta_energy_local_min == 3
    assert choice.ood == 3 and choice.ood_criterion == "first local minimum of |dE|"
    assert (choice.iid, choice.ood) == reference_choice(energy, grad)


def test_ood_rule_falls_back_to_global_argmin_of_energy_change():
    grad = np.linspace(10.0, 1.0, 6)
    energy = -np.cumsum([0.0, 16.0, 8.0, 4.0, 2.0, 1.0])  # |dE| strictly decreasing
    choice = choose_steps(energy, grad)
    assert choice.grad_local_min == -1 and choice.delta_energy_local_min == -1
    assert choice.ood == choice.iid == 5 and choice.ood_criterion == "argmin |dE|"


def test_rules_agree_with_reference_on_random_trajectories(rng):
    for _ in range(50):
        n = int(rng.choice([3, 4, 7, 40]))
        energy = np.cumsum(rng.normal(size=n))
        grad = np.abs(rng.normal(size=n)) if rng.random() < 0.5 else np.sort(rng.random(n))
        choice = choose_steps(energy, grad)
        assert (choice.iid, choice.ood) == reference_choice(energy, grad)


def test_convergence_criterion_is_separate_from_reporting_rule():
    energy = np.array([0.0, -1.0, -1.5, -1.6, -1.61])
    grad = np.array([4.0, 2.0, 1.0, 0.5, 0.6])
    choice = choose_steps(energy, grad, proj_grad_norm=grad / 2, gtol=0.6)
    assert choice.converged == 2  # first state with |Pg| = 0.5 < 0.6
    assert choice.iid == 4 and choice.ood == 3


@pytest.mark.parametrize("rule", ["iid", "ood"])
def test_solver_keeps_coefficients_of_the_chosen_state(rng, rule):
    """The scan-carry bookkeeping returns exactly p at the chosen state of the stored trajectory.

    A nonconvex energy (quadratic plus a cosine ripple) makes the gradient norm and |ΔE|
    non-monotone, so the local-minimum rules fire.
    """
    bundle = make_quadratic_bundle(rng)

    def rippled(p, b):
        return quadratic_energy(p, b) + 3.0 * jnp.sum(jnp.cos(4.0 * p))

    res = solve(rippled, start(bundle), bundle, steps=300, lr=0.05, rule=rule, gtol=1e-10,
                store_coeffs=True)
    traj = res.trajectory
    ref_iid, ref_ood = reference_choice(traj.energy, traj.grad_norm)
    assert (res.steps_iid, res.steps_ood) == (ref_iid, ref_ood)
    assert res.chosen_step == (ref_iid if rule == "iid" else ref_ood)
    np.testing.assert_array_equal(res.coeffs, traj.coeffs[res.chosen_step])
    assert res.energy == traj.energy[res.chosen_step]
    np.testing.assert_array_equal(res.coeffs_final, traj.coeffs[-1])


# --- divergence ----------------------------------------------------------------------------------

def test_too_large_step_is_reported_as_diverged(rng):
    bundle = make_quadratic_bundle(rng)
    lam_max = np.linalg.eigvalsh(np.asarray(bundle.coulomb)).max()
    res = solve(quadratic_terms, start(bundle), bundle, steps=1000, lr=5.0 / lam_max)
    assert res.status == STATUS_DIVERGED
    assert "diverged" in res.message and "reduce the step size" in res.message
    assert res.n_steps < 1000
    assert np.all(np.isfinite(res.coeffs)) and np.isfinite(res.energy)
    assert np.all(np.isfinite(res.coeffs_final))
    for arr in (res.trajectory.energy, res.trajectory.grad_norm, res.trajectory.proj_grad_norm,
                *res.trajectory.terms.values()):
        assert np.all(np.isfinite(arr))


def test_non_finite_energy_is_caught(rng):
    """E = −p₀³ runs away to −∞ in finite time (a falling energy: only the finiteness check can
    catch it); the run stops at the first non-finite state and returns the last finite one."""
    bundle = make_quadratic_bundle(rng)

    def runaway(p, b):
        return -(p[0] ** 3) * 1e3

    p0 = start(bundle) + 1.0
    res = solve(runaway, p0, bundle, steps=500, lr=1.0)
    assert res.status == STATUS_DIVERGED
    assert "non-finite" in res.message
    assert 0 < res.n_steps < 500
    assert np.all(np.isfinite(res.trajectory.energy))
    assert np.all(np.isfinite(res.coeffs)) and np.all(np.isfinite(res.coeffs_final))


def test_non_finite_initial_state(rng):
    bundle = make_quadratic_bundle(rng)
    res = solve(lambda p, b: jnp.log(-jnp.abs(p[0])), start(bundle), bundle, steps=5)
    assert res.status == STATUS_DIVERGED and "initial" in res.message
    assert res.n_steps == 0 and np.all(np.isfinite(res.coeffs))


# --- compilation ----------------------------------------------------------------------------------

def test_no_recompilation_for_same_shapes(rng):
    """New bundle values, step size, tolerance, rule, p0 and a step count within the same
    trajectory buffer reuse the compiled solver; a longer buffer compiles once."""
    b1, b2 = make_quadratic_bundle(rng), make_quadratic_bundle(rng)
    solve(quadratic_terms, start(b1), b1, steps=17, lr=0.01)
    size = optimize_mod._solve_loop._cache_size()
    solve(quadratic_terms, start(b2, 0.1), b2, steps=17, lr=0.02, gtol=1e-3, rule="ood")
    solve(quadratic_terms, start(b2), b2, steps=31, lr=0.03)
    assert optimize_mod._solve_loop._cache_size() == size
    assert optimize_mod.trajectory_capacity(31) == optimize_mod.trajectory_capacity(17) == 32
    res = solve(quadratic_terms, start(b2), b2, steps=32, lr=0.02)
    assert optimize_mod._solve_loop._cache_size() == size + 1
    assert len(res.trajectory.energy) == 33


def test_progress_handler_is_called(rng):
    bundle = make_quadratic_bundle(rng)
    seen = []
    with progress_handler(lambda step, e, g: seen.append((step, e, g))):
        solve(quadratic_terms, start(bundle), bundle, steps=199, lr=0.01)
    jax.effects_barrier()
    steps = [s for s, _, _ in seen]
    # every second state (1 % of 200) and the last one
    assert steps == list(range(0, 199, 2)) + [199]
