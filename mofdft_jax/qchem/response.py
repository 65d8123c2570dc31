"""Curvature labels: the exact non-interacting density response of a labelled SCF step.

The value and gradient labels fix T_S and its slope at the labelled densities; they say nothing
about its curvature across the SCF path, and a network fitted to them alone can (and, for ethanol,
does) turn the KS density into a saddle of the total energy. This module gives each labelled step
Hessian-vector labels from first-order perturbation theory of its own orbitals, with no extra SCF.

Derivation. Step k's orbitals are the exact ground state of the one-body Hamiltonian F̃⁽ᵏ⁾ (the
Fock matrix PySCF diagonalised, including any perturbing potential), so the gradient label is
∇_p T_S = −v_s + μ w with v_s the density-basis representation of the potential of F̃⁽ᵏ⁾
(:mod:`mofdft_jax.qchem.labels`, :mod:`mofdft_jax.qchem.perturbation`). Add a potential
δv(r) = Σ_μ δu_μ ω_μ(r), i.e. the orbital-basis matrix δV_αβ = Σ_μ δu_μ (αβ|μ) (3-centre overlap).
The new ground state is again non-interacting and exact; its gradient label is −(v_s + S δu) + μ′w,
S the density-basis overlap. Its density matrix to first order (uncoupled perturbation theory,
C_o / C_v occupied / virtual orbitals of F̃, ε their energies, closed shell):

.. math:: δΓ = 2 (C_v U C_oᵀ + C_o Uᵀ C_vᵀ), \\qquad U_{ai} = \\frac{(C_vᵀ δV C_o)_{ai}}{ε_i − ε_a}

and the fitted density moves by δp = F(δΓ), F the (linear) label fit of the step densities
(``coulomb+ext``: the 3-centre projection and the external energy tr(δΓ V_nuc) enter linearly).
Differentiating the gradient label along this path gives the curvature label

.. math:: P\\, ∇²T_S(p)\\, δp = −P\\, S\\, δu,\\qquad P = I − w wᵀ/(wᵀw),

exact in the labels' own convention (the same fit and the same μ w freedom as the gradient
labels; the projection P removes δμ). Its quadratic form is positive, δpᵀ∇²T_S δp = −δuᵀ S δp =
−∫δv δρ ≥ 0 (the response χ_s is negative definite): T_S is convex along every such direction.

Targets. For the trained energies the other terms' curvature along δp is added on the host:
``ts_res`` −S δu − ∇²T_APBE δp, ``txc`` −S δu + ∇²E_XC δp, ``tot`` −S δu + (W̃ + ∇²E_XC) δp, the
grid terms' Hessian-vector products by central differences of their analytic gradients
(:func:`mofdft_jax.qchem.labels.evaluate_grid_terms`) with a step of 1e-6 of ‖p‖ (the truncation
error falls as h²: 1e-8 relative at 1e-5 on water, against autodiff). Each direction is stored
normalised, ‖δp‖₂ = 1.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

#: Relative step ‖h δp‖ / ‖p‖ of the central differences of the grid terms' gradients.
FD_RELATIVE_STEP = 1e-6


def density_response(fock: np.ndarray, s_ao: np.ndarray, nocc: int,
                     potentials: np.ndarray) -> np.ndarray:
    """First-order density-matrix responses of the closed-shell ground state of ``fock``.

    Args:
      fock: ``(nao, nao)`` one-body Hamiltonian whose lowest ``nocc`` orbitals are occupied
        (doubly).
      s_ao: ``(nao, nao)`` orbital-basis overlap.
      nocc: number of doubly occupied orbitals.
      potentials: ``(m, nao, nao)`` symmetric perturbations δV.

    Returns:
      ``(m, nao, nao)`` δΓ = 2 (C_v U C_oᵀ + C_o Uᵀ C_vᵀ), U_ai = (C_vᵀ δV C_o)_ai / (ε_i − ε_a).
    """
    eps, c = scipy.linalg.eigh(fock, s_ao)
    c_o, c_v = c[:, :nocc], c[:, nocc:]
    gap = eps[:nocc][None, :] - eps[nocc:][:, None]          # (nvir, nocc) ε_i − ε_a < 0
    out = np.empty((len(potentials),) + fock.shape)
    for j, dv in enumerate(potentials):
        u = (c_v.T @ dv @ c_o) / gap
        x = c_v @ u @ c_o.T
        out[j] = 2.0 * (x + x.T)
    return out


def response_directions(seed, n_rows: int, n_dirs: int, naux: int) -> np.ndarray:
    """``(n_rows, n_dirs, naux)`` random potential coefficients δu ~ N(0, 1) (seeded)."""
    return np.random.default_rng(seed).normal(size=(n_rows, n_dirs, naux))


__all__ = ["FD_RELATIVE_STEP", "density_response", "response_directions"]
