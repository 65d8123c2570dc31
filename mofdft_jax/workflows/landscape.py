"""Is the KS density a minimum of a learned energy? Diagnostics at p* of a labelled molecule.

A learned functional is a usable variational objective only if the KS density p* of a molecule
is (close to) a *minimum* of the total energy E(p) = T_θ(p) + E_H + E_XC + E_ext under wᵀp = N.
For one labelled molecule this module measures, at p*,

* the energy error E(p*) − E_KS and the projected gradient ‖P∇E(p*)‖ (slope: what the value and
  gradient labels train);
* the curvature: the Hessian H = ∇²E(p*) restricted to the tangent plane wᵀδ = 0, as the
  generalised eigenproblem in the Coulomb metric W̃ (the metric of the Hartree term, whose own
  Hessian is W̃ — so an eigenvalue λ says how much stiffer or softer than Hartree the energy is
  along that direction, and λ < 0 is a descent direction leaving p*):

  .. math:: Zᵀ H Z\\, y = λ\\, Zᵀ W̃ Z\\, y, \\qquad Z = \\text{orthonormal basis of } w^⊥;

* where a minimisation ends: the Coulomb-norm distance ‖p − p*‖_W̃ = √((p − p*)ᵀ W̃ (p − p*)) of
  the initial guess and of the solver's last iterate, and the energy error there.

These are the diagnostics of issue 19 ("the source of an error is visible"): a functional whose
energy error at p* is small but whose minimisation ends far from p* has a landscape problem
(negative modes), not a fitting problem.
"""

from __future__ import annotations

import numpy as np


def tangent_basis(norm: np.ndarray) -> np.ndarray:
    """``(naux, naux − 1)`` orthonormal basis Z of the plane {δ : wᵀδ = 0} (from a QR of
    [w, I])."""
    norm = np.asarray(norm, dtype=np.float64)
    q, _ = np.linalg.qr(np.column_stack([norm, np.eye(norm.size)]))
    return q[:, 1:norm.size]


def coulomb_metric_spectrum(hessian: np.ndarray, coulomb: np.ndarray,
                            norm: np.ndarray) -> np.ndarray:
    """Eigenvalues λ of Zᵀ H Z y = λ Zᵀ W̃ Z y (ascending), ``(naux − 1,)``.

    Args:
      hessian: ``(naux, naux)`` ∇²E (symmetrised here).
      coulomb: ``(naux, naux)`` W̃ (positive definite).
      norm: ``(naux,)`` w.
    """
    import scipy.linalg

    z = tangent_basis(norm)
    h = np.asarray(hessian, dtype=np.float64)
    h = 0.5 * (h + h.T)
    return scipy.linalg.eigh(z.T @ h @ z, z.T @ np.asarray(coulomb) @ z, eigvals_only=True)


def coulomb_distance(p: np.ndarray, q: np.ndarray, coulomb: np.ndarray) -> float:
    """‖p − q‖_W̃ = √((p − q)ᵀ W̃ (p − q)) (the Hartree energy of the difference density, ×2)."""
    d = np.asarray(p) - np.asarray(q)
    return float(np.sqrt(max(d @ np.asarray(coulomb) @ d, 0.0)))


def landscape_at_reference(functional, info, labels, *, steps: int = 1000, init: str = "projminao",
                           lr: float | None = None, with_hessian: bool = True,
                           optimizer: str = "sgd", gtol: float = 1e-4) -> dict:
    """Slope, curvature and solver end point of a learned functional around one molecule's p*.

    Uses the labels' orbital basis, grid level and XC functional (``labels.settings``), the
    solver of ``mofdft solve`` (:func:`mofdft_jax.commands.learned_solve.solve_molecule_learned`)
    for the minimisation from ``init`` (``optimizer``, at most ``steps`` steps, stopping at
    ‖P∇E‖ ≤ ``gtol`` when the optimiser does so by default), and ``jax.hessian`` of the same
    energy function.

    Returns:
      dict: ``energy_error_at_ref_kcal`` (E(p*) − E_KS), ``proj_grad_norm_at_ref``,
      ``n_negative_modes`` and ``lowest_eigenvalues`` (five smallest λ; only with
      ``with_hessian``), ``init_distance``, ``final_distance`` (Coulomb norm to p*),
      ``energy_error_final_kcal``, ``solve_status``, ``solve_steps``.
    """
    import jax
    import jax.numpy as jnp

    from mofdft_jax.commands.learned_solve import (learned_energy_fn, prepare_learned_molecule,
                                                   solve_molecule_learned)
    from mofdft_jax.solver import get_optimizer
    from mofdft_jax.solver.energy import sum_terms
    from mofdft_jax.units import HARTREE_TO_KCAL

    settings = labels.settings
    xc = str(settings.get("xc", "pbe")).lower()
    basis, grid_level = settings["basis"], int(settings["grid_level"])
    e_ks = float(labels.ks_energy["e_tot"])
    p_ref = np.asarray(labels.p_ref, dtype=np.float64)

    setup = prepare_learned_molecule(labels.molecule, functional, basis=basis,
                                     grid_level=grid_level, xc=xc, init=init, with_forces=False,
                                     with_metric=get_optimizer(optimizer).uses_metric)
    bundle, inputs = setup.bundle, setup.inputs
    energy_terms_fn = learned_energy_fn(functional, xc)

    def total(p, inputs):
        return sum_terms(energy_terms_fn(p, inputs))

    value_and_grad = jax.jit(jax.value_and_grad(total))
    energy_ref, grad_ref = value_and_grad(jnp.asarray(p_ref), inputs)
    norm = np.asarray(bundle.norm)
    coulomb = np.asarray(bundle.coulomb)
    grad_ref = np.asarray(grad_ref)
    proj_grad = grad_ref - norm * (norm @ grad_ref) / (norm @ norm)
    out = {"molecule": labels.molecule.name,
           "energy_error_at_ref_kcal": (float(energy_ref) - e_ks) * HARTREE_TO_KCAL,
           "proj_grad_norm_at_ref": float(np.linalg.norm(proj_grad))}
    if with_hessian:
        hessian = np.asarray(jax.jit(jax.hessian(total))(jnp.asarray(p_ref), inputs))
        lam = coulomb_metric_spectrum(hessian, coulomb, norm)
        out["n_negative_modes"] = int(np.sum(lam < 0))
        out["lowest_eigenvalues"] = [float(x) for x in lam[:5]]
    if steps:
        summary, result = solve_molecule_learned(
            labels.molecule, functional, info, init=init, steps=steps, lr=lr, xc=xc,
            basis=basis, grid_level=grid_level, optimizer=optimizer, gtol=gtol, setup=setup)
        out.update({
            "init_distance": coulomb_distance(setup.guess.coeffs, p_ref, coulomb),
            "final_distance": coulomb_distance(result.coeffs_final, p_ref, coulomb),
            "energy_error_final_kcal": (result.energy_final - e_ks) * HARTREE_TO_KCAL,
            "energy_error_chosen_kcal": (result.energy - e_ks) * HARTREE_TO_KCAL,
            "solve_status": result.status, "solve_steps": result.n_steps,
            "optimizer": optimizer,
            "proj_grad_norm_final": float(result.trajectory.proj_grad_norm[-1]),
        })
    return out


__all__ = ["coulomb_distance", "coulomb_metric_spectrum", "landscape_at_reference",
           "tangent_basis"]
