"""Classical kinetic-energy density functionals: TF, vW, TF+λvW and APBE (spec §4.1, §6.4).

Pointwise kinetic energy densities per volume t(ρ, σ), σ = |∇ρ|²:

* Thomas–Fermi: t_TF = c_TF ρ^{5/3}, c_TF = (3/10)(3π²)^{2/3} (libxc ``LDA_K_TF``);
* von Weizsäcker: t_vW = σ / (8ρ) (libxc ``GGA_K_VW``);
* TF + λ vW: λ = 1/9 is the code's ``TFVW``, λ = 1 its ``TFVW1.1`` (naming trap, spec §6.4);
* APBE: t_TF F(s), F(s) = 1 + κ - κ/(1 + μ s²/κ), κ = 0.804, μ = 0.23889,
  s² = σ/(4(3π²)^{2/3}ρ^{8/3})
  (Constantin et al. PRL 106, 186406 (2011); libxc ``GGA_K_APBE``).

Terms ``term(coeffs, bundle) -> Hartree`` integrate the masked densities on the bundle's grid
(ρ < 1e-14 dropped everywhere; σ < 1e-14 dropped for the gradient-dependent vW and APBE).

References: M-OFDFT paper SI A.3.2 and B.5 (classical baselines), spec §4.1.
"""

from __future__ import annotations

import functools

import numpy as np

from mofdft_jax.functionals.grid import grid_of, integrate_energy_density, masked_energy_density
from mofdft_jax.types import Array, Float, Scalar

#: Thomas–Fermi constant c_TF = (3/10)(3π²)^{2/3}.
C_TF = 0.3 * (3.0 * np.pi**2) ** (2.0 / 3.0)
#: APBE enhancement parameters (spec §4.1; libxc ``GGA_K_APBE``).
APBE_KAPPA = 0.804
APBE_MU = 0.23889


def thomas_fermi_energy_density(rho: Array, sigma: Array | None = None) -> Array:
    """t_TF = c_TF ρ^{5/3} (σ ignored)."""
    del sigma
    return C_TF * rho ** (5.0 / 3.0)


def von_weizsaecker_energy_density(rho: Array, sigma: Array) -> Array:
    """t_vW = |∇ρ|² / (8ρ)."""
    return sigma / (8.0 * rho)


def reduced_gradient_squared(rho: Array, sigma: Array) -> Array:
    """s² = |∇ρ|² / (4 (3π²)^{2/3} ρ^{8/3})."""
    return sigma / (4.0 * (3.0 * np.pi**2) ** (2.0 / 3.0) * rho ** (8.0 / 3.0))


def apbe_energy_density(rho: Array, sigma: Array) -> Array:
    """APBE: t_TF(ρ) (1 + κ - κ/(1 + μ s²/κ)) with κ = 0.804, μ = 0.23889."""
    s2 = reduced_gradient_squared(rho, sigma)
    enhancement = 1.0 + APBE_KAPPA - APBE_KAPPA / (1.0 + APBE_MU * s2 / APBE_KAPPA)
    return thomas_fermi_energy_density(rho) * enhancement


def tf_vw_energy_density(rho: Array, sigma: Array, vw_fraction: float) -> Array:
    """t_TF + λ t_vW."""
    return thomas_fermi_energy_density(rho) + vw_fraction * von_weizsaecker_energy_density(rho,
                                                                                            sigma)


#: Pointwise kinetic energy densities t(ρ, σ), by registry name.
KINETIC_ENERGY_DENSITIES = {
    "tf": thomas_fermi_energy_density,
    "vw": von_weizsaecker_energy_density,
    "tf+1/9vw": functools.partial(tf_vw_energy_density, vw_fraction=1.0 / 9.0),
    "tf+vw": functools.partial(tf_vw_energy_density, vw_fraction=1.0),
    "apbe": apbe_energy_density,
}
_masked_tf = masked_energy_density(thomas_fermi_energy_density, uses_sigma=False)
_masked_vw = masked_energy_density(von_weizsaecker_energy_density, uses_sigma=True)


def _masked_tf_vw(vw_fraction: float):
    def masked_fn(rho: Array, sigma: Array) -> Array:
        return _masked_tf(rho, sigma) + vw_fraction * _masked_vw(rho, sigma)

    return masked_fn


#: Masked t(ρ, σ) used on the grid: TF drops ρ < 1e-14, vW and APBE also drop σ < 1e-14
#: (spec §4.1); in TF+λvW each part carries its own mask.
MASKED_KINETIC_ENERGY_DENSITIES = {
    "tf": _masked_tf,
    "vw": _masked_vw,
    "tf+1/9vw": _masked_tf_vw(1.0 / 9.0),
    "tf+vw": _masked_tf_vw(1.0),
    "apbe": masked_energy_density(apbe_energy_density, uses_sigma=True),
}


def kinetic_energy(coeffs: Float[Array, "naux"], bundle, functional: str = "apbe") -> Scalar:
    """T[ρ_p] = Σ_g w_g t(ρ(r_g), σ(r_g)) for a classical kinetic functional (Hartree).

    Args:
      coeffs: ``(naux,)`` density coefficients p.
      bundle: an :class:`~mofdft_jax.bundle.IntegralBundle` with a grid (or a ``GridBundle``).
      functional: a key of :data:`KINETIC_ENERGY_DENSITIES`.
    """
    grid = grid_of(bundle)
    return integrate_energy_density(MASKED_KINETIC_ENERGY_DENSITIES[functional], coeffs, grid)


def thomas_fermi_energy(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """T_TF = c_TF ∫ρ^{5/3} on the grid, Hartree."""
    return kinetic_energy(coeffs, bundle, "tf")


def von_weizsaecker_energy(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """T_vW = ∫|∇ρ|²/(8ρ) on the grid, Hartree."""
    return kinetic_energy(coeffs, bundle, "vw")


def tf_ninth_vw_energy(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """T_TF + (1/9) T_vW (the official code's ``TFVW``), Hartree."""
    return kinetic_energy(coeffs, bundle, "tf+1/9vw")


def tf_vw_energy(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """T_TF + T_vW (the official code's ``TFVW1.1``), Hartree."""
    return kinetic_energy(coeffs, bundle, "tf+vw")


def apbe_energy(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """APBE kinetic energy on the grid, Hartree."""
    return kinetic_energy(coeffs, bundle, "apbe")
