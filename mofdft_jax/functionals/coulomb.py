"""Grid-free energy terms: Hartree ½pᵀW̃p and external pᵀv_ext (spec §4.1).

The Coulomb operator ``bundle.coulomb`` is either the dense ``(naux, naux)`` matrix
W̃_μν = (ω_μ|ω_ν) (PySCF ``int2c2e``) or any pytree object with a ``matvec(p) -> W̃p`` method (a
compressed operator for ~700-atom proteins); :func:`coulomb_matvec` dispatches on the type.

References: M-OFDFT paper Eq. 1 (spec §4.1).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mofdft_jax.types import Array, Float, Scalar


def coulomb_matvec(coulomb, coeffs: Float[Array, "naux"]) -> Float[Array, "naux"]:
    """W̃p for a dense Coulomb matrix or an operator exposing ``matvec``."""
    if isinstance(coulomb, (jnp.ndarray, np.ndarray)):
        return coulomb @ coeffs
    return coulomb.matvec(coeffs)


def hartree_energy(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """E_H = ½ pᵀ W̃ p, Hartree (spec §4.1)."""
    return 0.5 * jnp.dot(coeffs, coulomb_matvec(bundle.coulomb, coeffs))


def external_energy(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """E_ext = pᵀ v_ext with (v_ext)_μ = -Σ_A Z_A ∫ω_μ/|r - R_A|, Hartree (spec §4.1)."""
    return jnp.dot(coeffs, bundle.v_ext)


def electron_count(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """N[p] = wᵀp with w_μ = ∫ω_μ (the constraint of the density optimisation, spec §4.2)."""
    return jnp.dot(bundle.norm, coeffs)
