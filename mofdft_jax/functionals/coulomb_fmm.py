"""Compressed Coulomb operator for large molecules: exact near field, multipole far field.

The Hartree term of M-OFDFT is E_H = ½ pᵀW̃p with W̃_μν = (ω_μ|ω_ν) (spec §4.1). For a ~700-atom
protein the density basis has ~49,000 functions and the dense W̃ needs 19.3 GB in float64
(environment_notes §8), too much for a 24 GiB machine. This module stores W̃ the way fast-multipole
codes do, as

.. math::  W̃ = Qᵀ T Q + Δ

* **far field** Qᵀ T Q. A spherical Gaussian shell of degree l, ω(r) = S_lm(r − A) g(|r − A|)
  (S_lm a real solid harmonic), has a single non-zero multipole moment, the (l, m) one; outside
  its overlap range it acts exactly as a point l-pole at its atom. Q ``(nmult, naux)`` maps the
  coefficients p to the atom-centred multipoles q_a^{lm} = Σ_{μ ∈ a, (l,m)} m_μ p_μ (each function
  feeds exactly one component, so Q is stored as ``mult_index``/``mult_weight``), and
  T ``(nmult, nmult)`` holds the exact point multipole–multipole interaction tensors between
  every pair of different atoms (l ≤ 4 on each side), zero within an atom;
* **near field** Δ = W̃ − QᵀTQ, kept only for the shell pairs (i, j) whose Gaussians overlap:
  the deviation of the Gaussian–Gaussian Coulomb integral from its point-multipole value is
  ∝ erfc(√ρ R) (plus e^{−ρR²} polynomial terms), ρ = α_iα_j/(α_i + α_j), so pairs with
  √ρ R beyond a cutoff (relative deviation < ~10⁻¹³) are dropped; within an atom Δ = W̃ exactly.

The near field is stored row shell by row shell in a padded ("sliced ELLPACK") layout: every row
shell s (2l+1 rows) lists the K_s density-basis functions it interacts with exactly and the
``(2l+1, K_s)`` values; shells of equal l and similar K_s share one bucket, padded to the bucket's
largest K with column 0 and value 0. One matrix–vector product is then a gather of p, one batched
matrix–vector product per bucket, and one dense ``(nmult, nmult)`` product: O(nnz) work and memory
instead of O(naux²).

The operator is a pytree of arrays (a NamedTuple), passed to jitted drivers as the ``coulomb``
field of the :class:`~mofdft_jax.bundle.IntegralBundle`; :func:`mofdft_jax.functionals.coulomb
.hartree_energy` dispatches to :meth:`CompressedCoulomb.hartree_energy`, whose gradient is one
matrix–vector product W̃p (a custom VJP: W̃ is symmetric, so ∇_p ½pᵀW̃p = W̃p, and the transpose of
the gathers is never formed). Built on the host by
:func:`mofdft_jax.qchem.coulomb_blocks.build_compressed_coulomb`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mofdft_jax.types import Array, Float, Int, Scalar


class NearBucket(NamedTuple):
    """Row shells of one angular momentum l with a common padded column count K.

    Attributes:
      cols: ``(nb, K)`` density-basis indices of the exact near-field columns of each row shell
        (padding: index 0).
      vals: ``(nb, 2l+1, K)`` Δ values of the shell's 2l+1 rows at those columns (padding: 0).
    """

    cols: Int[Array, "nb k"]
    vals: Float[Array, "nb r k"]


class CompressedCoulomb(NamedTuple):
    """W̃ = QᵀTQ + Δ for large molecules (module docstring); a pytree of arrays.

    Attributes:
      mult_index: ``(naux,)`` multipole component (atom a, l, m) fed by each function.
      mult_weight: ``(naux,)`` its moment m_μ (Q_{k(μ), μ} = m_μ).
      far: ``(nmult, nmult)`` point multipole–multipole interaction tensors T, zero blocks on the
        diagonal (same atom).
      near: the near-field buckets (:class:`NearBucket`), in the order of ``near_order``.
      near_order: ``(naux,)`` position of function μ in the concatenation of the buckets' row
        outputs (each function is a row of exactly one bucket).
    """

    mult_index: Int[Array, "naux"]
    mult_weight: Float[Array, "naux"]
    far: Float[Array, "nmult nmult"]
    near: tuple
    near_order: Int[Array, "naux"]

    @property
    def naux(self) -> int:
        """Number of density-basis functions."""
        return self.mult_index.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """``(naux, naux)``, the shape of the matrix it represents."""
        return (self.naux, self.naux)

    def multipoles(self, coeffs: Float[Array, "naux"]) -> Float[Array, "nmult"]:
        """q = Q p: the atom-centred multipole moments of the density p."""
        nmult = self.far.shape[0]
        return jnp.zeros(nmult, coeffs.dtype).at[self.mult_index].add(self.mult_weight * coeffs)

    def near_matvec(self, coeffs: Float[Array, "naux"]) -> Float[Array, "naux"]:
        """Δ p, the near-field part."""
        outs = [jnp.einsum("brk,bk->br", b.vals, coeffs[b.cols]).reshape(-1) for b in self.near]
        return jnp.concatenate(outs)[self.near_order]

    def far_matvec(self, coeffs: Float[Array, "naux"]) -> Float[Array, "naux"]:
        """Qᵀ T Q p, the far-field (multipole) part."""
        field = self.far @ self.multipoles(coeffs)
        return self.mult_weight * field[self.mult_index]

    def matvec(self, coeffs: Float[Array, "naux"]) -> Float[Array, "naux"]:
        """W̃ p = Qᵀ T Q p + Δ p, ``(naux,)``."""
        return self.far_matvec(coeffs) + self.near_matvec(coeffs)

    def __matmul__(self, coeffs):
        return self.matvec(coeffs)

    def hartree_energy(self, coeffs: Float[Array, "naux"]) -> Scalar:
        """E_H = ½ pᵀW̃p (spec §4.1) with a one-product gradient W̃p (custom VJP)."""
        return compressed_hartree_energy(coeffs, self)


def _zero_cotangent(x):
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


@jax.custom_vjp
def compressed_hartree_energy(coeffs: Float[Array, "naux"], coulomb: CompressedCoulomb) -> Scalar:
    """E_H = ½ pᵀW̃p for a :class:`CompressedCoulomb` W̃ (Hartree).

    Its VJP is g·W̃p (W̃ symmetric), reusing the product of the forward pass; the operator itself
    is treated as a constant (zero cotangent).
    """
    return 0.5 * jnp.dot(coeffs, coulomb.matvec(coeffs))


def _hartree_fwd(coeffs, coulomb):
    wp = coulomb.matvec(coeffs)
    return 0.5 * jnp.dot(coeffs, wp), (wp, coulomb)


def _hartree_bwd(res, g):
    wp, coulomb = res
    return g * wp, jax.tree.map(_zero_cotangent, coulomb)


compressed_hartree_energy.defvjp(_hartree_fwd, _hartree_bwd)


def compressed_coulomb_nbytes(coulomb: CompressedCoulomb) -> int:
    """Bytes held by the operator's arrays."""
    return int(sum(np.asarray(x).nbytes if not hasattr(x, "nbytes") else x.nbytes
                   for x in jax.tree.leaves(coulomb)))
