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

import functools
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
    """``(4, blk)`` ρ and ∇ρ of one block: ``ao[b] @ p[idx[b]]`` (as one GEMV)."""
    ncomp, blk, nsig = ao_b.shape
    return (ao_b.reshape(ncomp * blk, nsig) @ coeffs[idx_b]).reshape(ncomp, blk)


def density_on_grid(coeffs: Float[Array, "naux"], grid: GridBundle
                    ) -> tuple[Float[Array, "nblk blk"], Float[Array, "nblk 3 blk"]]:
    """ρ and ∇ρ on every grid point, in the grid's block layout.

    Returns:
      ``rho`` ``(nblk, blk)`` and ``grad_rho`` ``(nblk, 3, blk)`` (padding points: 0).
    """
    coeffs = jnp.asarray(coeffs)
    vals = jax.lax.map(lambda args: _block_density(coeffs, *args), (grid.ao, grid.idx))
    return vals[:, 0], vals[:, 1:]


def _block_energy(energy_density_fn, coeffs, ao_b, idx_b, w_b):
    vals = _block_density(coeffs, ao_b, idx_b)
    rho = vals[0]
    sigma = jnp.sum(vals[1:] * vals[1:], axis=0)
    e = energy_density_fn(rho, sigma)
    return jax.tree.map(lambda x: jnp.dot(w_b, x), e)


def _integrate_plain(energy_density_fn, coeffs, weights, ao, idx):
    per_block = jax.lax.map(lambda args: _block_energy(energy_density_fn, coeffs, *args),
                            (ao, idx, weights))
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), per_block)


def _integrate_with_gradient(energy_density_fn, coeffs, weights, ao, idx):
    """Energies and their gradients w.r.t. ``coeffs`` in ONE pass over the blocks.

    Per block: ρ, ∇ρ = ao_b p[idx_b]; pointwise ∂e/∂ρ, ∂e/∂σ by forward mode; then
    ∂E/∂p[idx_b] += ao_bᵀ [w ∂e/∂ρ; 2w ∂e/∂σ ∇ρ]. The block's values are read twice while they are
    still in cache, instead of once in a forward sweep and once in a reverse sweep over all blocks.
    """
    naux = coeffs.shape[0]
    probe = jax.eval_shape(energy_density_fn, jnp.zeros(1), jnp.zeros(1))
    leaves, treedef = jax.tree.flatten(probe)
    nterm = len(leaves)

    def fn_flat(rho, sigma):
        return jnp.stack(jax.tree.leaves(energy_density_fn(rho, sigma)))  # (nterm, blk)

    def body(carry, args):
        energy, grad = carry
        ao_b, idx_b, w_b = args
        ncomp, blk, nsig = ao_b.shape
        # 2-D (4·blk, nsig) view: both products are plain GEMVs over the same cached block
        ao_2d = ao_b.reshape(ncomp * blk, nsig)
        vals = (ao_2d @ coeffs[idx_b]).reshape(ncomp, blk)
        rho = vals[0]
        grad_rho = vals[1:]
        sigma = jnp.sum(grad_rho * grad_rho, axis=0)
        e, de_drho = jax.jvp(fn_flat, (rho, sigma), (jnp.ones_like(rho), jnp.zeros_like(sigma)))
        de_dsigma = jax.jvp(fn_flat, (rho, sigma), (jnp.zeros_like(rho), jnp.ones_like(sigma)))[1]
        pot = jnp.concatenate([(w_b * de_drho)[:, None, :],
                               (2.0 * w_b * de_dsigma)[:, None, :] * grad_rho[None]], axis=1)
        grad_b = pot.reshape(nterm, ncomp * blk) @ ao_2d  # (nterm, nsig)
        grad = grad.at[:, idx_b].add(grad_b)
        return (energy + e @ w_b, grad), None

    init = (jnp.zeros(nterm, coeffs.dtype), jnp.zeros((nterm, naux), coeffs.dtype))
    (energy, grad), _ = jax.lax.scan(body, init, (ao, idx, weights))
    return energy, grad, treedef


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _integrate(energy_density_fn, coeffs, weights, ao, idx):
    return _integrate_plain(energy_density_fn, coeffs, weights, ao, idx)


def _integrate_fwd(energy_density_fn, coeffs, weights, ao, idx):
    energy, grad, treedef = _integrate_with_gradient(energy_density_fn, coeffs, weights, ao, idx)
    return jax.tree.unflatten(treedef, list(energy)), grad


def _integrate_bwd(energy_density_fn, grad, cotangent):
    ct = jnp.stack(jax.tree.leaves(cotangent))
    return ct @ grad, None, None, None


_integrate.defvjp(_integrate_fwd, _integrate_bwd)


def integrate_energy_density(energy_density_fn: EnergyDensityFn, coeffs: Float[Array, "naux"],
                             grid: GridBundle, *, fused_gradient: bool = True):
    """Σ_g w_g e(ρ(r_g), σ(r_g)) with σ = |∇ρ|², block by block.

    Args:
      energy_density_fn: ``(rho, sigma) -> e`` acting on ``(blk,)`` arrays; it may return a pytree of
        ``(blk,)`` arrays (several terms in one pass over the grid), and must already be masked
        (:func:`masked_energy_density`) if it is unsafe at ρ ≤ 0. With ``fused_gradient`` it must
        be differentiable in forward mode (every function in this package is).
      coeffs: ``(naux,)`` density coefficients.
      grid: the :class:`GridBundle`.
      fused_gradient: reverse-mode derivatives w.r.t. ``coeffs`` are computed in the same pass over
        the grid as the energy (a ``custom_vjp``; the basis values are streamed from memory once
        per energy+gradient instead of twice). Set ``False`` for plain autodiff (needed for
        forward-mode or higher derivatives, or derivatives w.r.t. the grid arrays).

    Returns:
      A scalar (or the pytree of scalars matching ``energy_density_fn``'s output), Hartree.
    """
    coeffs = jnp.asarray(coeffs)
    if fused_gradient:
        return _integrate(energy_density_fn, coeffs, grid.weights, grid.ao, grid.idx)
    return _integrate_plain(energy_density_fn, coeffs, grid.weights, grid.ao, grid.idx)


def electron_count_on_grid(coeffs: Float[Array, "naux"], grid: GridBundle) -> Array:
    """∫ρ = Σ_g w_g ρ(r_g) (no masking), a check of the grid and the fit."""
    rho, _ = density_on_grid(coeffs, grid)
    return jnp.sum(grid.weights * rho)
