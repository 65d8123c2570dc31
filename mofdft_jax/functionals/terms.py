"""Several grid terms in one pass over the grid (the solver's hot path).

A kinetic functional and an XC functional read the same ρ and ∇ρ; evaluating them in one
:func:`~mofdft_jax.functionals.grid.integrate_energy_density` call streams the basis values once
instead of twice.
"""

from __future__ import annotations

from mofdft_jax.functionals.grid import grid_of, integrate_energy_density
from mofdft_jax.functionals.kinetic import MASKED_KINETIC_ENERGY_DENSITIES
from mofdft_jax.functionals.xc import MASKED_XC_ENERGY_DENSITIES
from mofdft_jax.types import Array, Float


def grid_energy_terms(coeffs: Float[Array, "naux"], bundle, kinetic: str | None = "apbe",
                      xc: str | None = "pbe") -> dict[str, Array]:
    """``{"kinetic": T, "xc": E_XC}`` (Hartree) from one pass over the grid.

    Args:
      coeffs: ``(naux,)`` density coefficients.
      bundle: an ``IntegralBundle`` with a grid, or a ``GridBundle``.
      kinetic: key of ``KINETIC_FUNCTIONALS`` or ``None`` (term omitted).
      xc: key of ``XC_FUNCTIONALS`` or ``None`` (term omitted).
    """
    fns = {}
    if kinetic is not None:
        fns["kinetic"] = MASKED_KINETIC_ENERGY_DENSITIES[kinetic]
    if xc is not None:
        fns["xc"] = MASKED_XC_ENERGY_DENSITIES[xc]

    def energy_density(rho, sigma):
        return {k: fn(rho, sigma) for k, fn in fns.items()}

    grid = grid_of(bundle)
    return integrate_energy_density(energy_density, coeffs, grid)
