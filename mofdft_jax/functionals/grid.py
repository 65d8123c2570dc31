"""Density on the quadrature grid and block-by-block integration of energy densities.

ρ(r_g) = Σ_μ p_μ ω_μ(r_g) and ∇ρ(r_g) = Σ_μ p_μ ∇ω_μ(r_g) are evaluated block by block from the
screened basis values of a :class:`~mofdft_jax.bundle.GridBundle`: block ``b`` gathers the
coefficients of its significant functions ``p[idx[b]]`` and contracts them with ``ao[b]``
(``(4, blk, nsig)``). Integrals Σ_g w_g e(ρ_g, σ_g) are accumulated with ``jax.lax.map`` so the peak
memory of the per-point work is one block (spec §4.1, issue 5).

Masking (spec §4.1): the paper drops points with ρ < 1e-14 (and, for gradient-dependent terms,
|∇ρ|² < 1e-14); :func:`masked_energy_density` does this with the double-``where`` trick so both the
value and its gradient are finite at zero or negative density.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mofdft_jax.bundle import GridBundle
from mofdft_jax.types import Array, Float

#: Density below which a grid point contributes nothing (spec §4.1).
RHO_CUTOFF = 1e-14
#: |∇ρ|² below which a point contributes nothing to gradient-dependent terms (spec §4.1).
SIGMA_CUTOFF = 1e-14

EnergyDensityFn = Callable[[Array, Array], object]


def masked_energy_density(energy_density_fn: Callable[[Array, Array], Array], *,
                          uses_sigma: bool = True) -> Callable[[Array, Array], Array]:
    """Wrap e(ρ, σ) so points with ρ < 1e-14 (and σ < 1e-14 if ``uses_sigma``) give exactly 0.

    Double ``where``: the function is evaluated at a harmless ρ = 1, σ = 1 on masked points and the
    result discarded, so neither the value nor the gradient is NaN there (spec §4.1).
    """

    def masked_fn(rho: Array, sigma: Array) -> Array:
        keep = rho >= RHO_CUTOFF
        if uses_sigma:
            keep = keep & (sigma >= SIGMA_CUTOFF)
        safe_rho = jnp.where(keep, rho, 1.0)
        safe_sigma = jnp.where(keep, sigma, 1.0)
        return jnp.where(keep, energy_density_fn(safe_rho, safe_sigma), 0.0)

    masked_fn.__name__ = f"masked_{getattr(energy_density_fn, '__name__', 'energy_density')}"
    return masked_fn


def _block_density(coeffs: Array, ao_b: Array, idx_b: Array) -> Array:
    """``(4, blk)`` ρ and ∇ρ of one block: ``ao[b] @ p[idx[b]]``."""
    return ao_b @ coeffs[idx_b]


def density_on_grid(coeffs: Float[Array, "naux"], grid: GridBundle
                    ) -> tuple[Float[Array, "nblk blk"], Float[Array, "nblk 3 blk"]]:
    """ρ and ∇ρ on every grid point, in the grid's block layout.

    Returns:
      ``rho`` ``(nblk, blk)`` and ``grad_rho`` ``(nblk, 3, blk)`` (padding points: 0).
    """
    coeffs = jnp.asarray(coeffs)
    vals = jax.lax.map(lambda args: _block_density(coeffs, *args), (grid.ao, grid.idx))
    return vals[:, 0], vals[:, 1:]


def integrate_energy_density(energy_density_fn: EnergyDensityFn, coeffs: Float[Array, "naux"],
                             grid: GridBundle):
    """Σ_g w_g e(ρ(r_g), σ(r_g)) with σ = |∇ρ|², block by block.

    Args:
      energy_density_fn: ``(rho, sigma) -> e`` acting on ``(blk,)`` arrays; it may return a pytree of
        ``(blk,)`` arrays (several terms in one pass over the grid), and must already be masked
        (:func:`masked_energy_density`) if it is unsafe at ρ ≤ 0.
      coeffs: ``(naux,)`` density coefficients.
      grid: the :class:`GridBundle`.

    Returns:
      A scalar (or the pytree of scalars matching ``energy_density_fn``'s output), Hartree.
    """
    coeffs = jnp.asarray(coeffs)

    def block_energy(args):
        ao_b, idx_b, w_b = args
        vals = _block_density(coeffs, ao_b, idx_b)
        rho = vals[0]
        sigma = jnp.sum(vals[1:] * vals[1:], axis=0)
        e = energy_density_fn(rho, sigma)
        return jax.tree.map(lambda x: jnp.dot(w_b, x), e)

    per_block = jax.lax.map(block_energy, (grid.ao, grid.idx, grid.weights))
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), per_block)


def electron_count_on_grid(coeffs: Float[Array, "naux"], grid: GridBundle) -> Array:
    """∫ρ = Σ_g w_g ρ(r_g) (no masking), a check of the grid and the fit."""
    rho, _ = density_on_grid(coeffs, grid)
    return jnp.sum(grid.weights * rho)
