"""Grid-free energy terms: Hartree ½pᵀW̃p and external pᵀv_ext (spec §4.1).

The Coulomb operator ``bundle.coulomb`` is either the dense ``(naux, naux)`` matrix
W̃_μν = (ω_μ|ω_ν) (PySCF ``int2c2e``) or any pytree object with a ``matvec(p) -> W̃p`` method (a
compressed operator for ~700-atom proteins); :func:`coulomb_matvec` dispatches on the type.

References: M-OFDFT paper Eq. 1 (spec §4.1).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from mofdft_jax.types import Array, Float, Scalar


def coulomb_matvec(coulomb, coeffs: Float[Array, "naux"]) -> Float[Array, "naux"]:
    """W̃p for a dense Coulomb matrix or an operator exposing ``matvec``."""
    if isinstance(coulomb, (jnp.ndarray, np.ndarray)):
        return coulomb @ coeffs
    return coulomb.matvec(coeffs)


@jax.custom_jvp
def _dense_hartree(coeffs, coulomb):
    return 0.5 * jnp.dot(coeffs, coulomb @ coeffs)


@functools.partial(_dense_hartree.defjvp, symbolic_zeros=True)
def _dense_hartree_jvp(primals, tangents):
    # W̃ is symmetric: dE_H = (W̃p)·dp (+ ½ pᵀ dW̃ p), so value and gradient share one matvec
    # (plain autodiff would add a second, transposed matvec: ~2.5x slower per solver step)
    coeffs, coulomb = primals
    d_coeffs, d_coulomb = tangents
    v = coulomb @ coeffs
    tangent = jnp.zeros((), v.dtype)
    if not isinstance(d_coeffs, SymbolicZero):
        tangent = tangent + jnp.dot(v, d_coeffs)
    if not isinstance(d_coulomb, SymbolicZero):
        tangent = tangent + 0.5 * jnp.dot(coeffs, d_coulomb @ coeffs)
    return 0.5 * jnp.dot(coeffs, v), tangent


def hartree_energy(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """E_H = ½ pᵀ W̃ p, Hartree (spec §4.1). For a dense W̃ the gradient W̃p reuses the matvec of
    the value (custom JVP)."""
    if isinstance(bundle.coulomb, (jnp.ndarray, np.ndarray)):
        return _dense_hartree(coeffs, jnp.asarray(bundle.coulomb))
    if hasattr(bundle.coulomb, "hartree_energy"):  # compressed operator (coulomb_fmm): one W̃p
        return bundle.coulomb.hartree_energy(coeffs)
    return 0.5 * jnp.dot(coeffs, coulomb_matvec(bundle.coulomb, coeffs))


def external_energy(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """E_ext = pᵀ v_ext with (v_ext)_μ = -Σ_A Z_A ∫ω_μ/|r - R_A|, Hartree (spec §4.1)."""
    return jnp.dot(coeffs, bundle.v_ext)


def electron_count(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """N[p] = wᵀp with w_μ = ∫ω_μ (the constraint of the density optimisation, spec §4.2)."""
    return jnp.dot(bundle.norm, coeffs)
