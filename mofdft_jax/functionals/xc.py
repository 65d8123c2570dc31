"""Exchange-correlation functionals for closed-shell densities: LDA (Slater + PW92) and PBE.

Pointwise energy densities per volume ``e(ρ, σ)`` (σ = |∇ρ|²) written in JAX so that potentials come
from autodiff; they reproduce libxc (``LDA_X + LDA_C_PW`` and ``GGA_X_PBE + GGA_C_PBE``, which is
what PySCF calls ``'LDA,PW'`` and ``'PBE'``) to 1e-10 relative in e, ∂e/∂ρ and ∂e/∂σ
(tests/functionals/test_xc.py).

The grid terms ``lda_xc_energy`` / ``pbe_xc_energy`` integrate the *masked* energy density
(spec §4.1): points with ρ < 1e-14 or |∇ρ|² < 1e-14 contribute nothing, with value and gradient
finite there (double ``where``), so negative or vanishing fitted densities are harmless.

References: M-OFDFT paper Eq. 1 and SI A.3.2 (spec §4.1); J. P. Perdew and Y. Wang, PRB 45, 13244
(1992); J. P. Perdew, K. Burke and M. Ernzerhof, PRL 77, 3865 (1996); libxc ``lda_c_pw.c``,
``gga_x_pbe.c``, ``gga_c_pbe.c`` (parameter sets).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mofdft_jax.functionals.grid import grid_of, integrate_energy_density, masked_energy_density
from mofdft_jax.types import Array, Float, Scalar

#: Slater exchange constant: e_x^LDA = -C_X ρ^{4/3}, C_X = (3/4)(3/π)^{1/3}.
C_X = 0.75 * (3.0 / np.pi) ** (1.0 / 3.0)
#: PBE exchange parameters (libxc ``gga_x_pbe``): κ and μ = β π²/3.
PBE_KAPPA = 0.804
PBE_MU = 0.2195149727645171
#: PBE correlation parameters (libxc ``gga_c_pbe``): β and γ = (1 - ln 2)/π².
PBE_BETA = 0.06672455060314922
PBE_GAMMA = (1.0 - np.log(2.0)) / np.pi**2


class PW92Params(NamedTuple):
    """Paramagnetic (ζ = 0) parameters of the Perdew–Wang 1992 correlation G(r_s)."""

    a: float
    alpha1: float
    beta1: float
    beta2: float
    beta3: float
    beta4: float


#: libxc ``LDA_C_PW`` (the published, rounded A), used by ``'LDA,PW'``.
PW92 = PW92Params(0.031091, 0.21370, 7.5957, 3.5876, 1.6382, 0.49294)
#: libxc ``LDA_C_PW_MOD`` (A with more digits), used inside ``GGA_C_PBE``.
PW92_MOD = PW92Params(0.0310907, 0.21370, 7.5957, 3.5876, 1.6382, 0.49294)


def wigner_seitz_radius(rho: Array) -> Array:
    """r_s = (3 / (4πρ))^{1/3} (Bohr)."""
    return (3.0 / (4.0 * np.pi * rho)) ** (1.0 / 3.0)


def lda_exchange_energy_density(rho: Array) -> Array:
    """Slater exchange per volume, e_x = -(3/4)(3/π)^{1/3} ρ^{4/3} (libxc ``LDA_X``)."""
    return -C_X * rho ** (4.0 / 3.0)


def pw92_correlation_per_particle(rho: Array, params: PW92Params = PW92) -> Array:
    """PW92 correlation energy per electron ε_c(r_s) for ζ = 0.

    .. math:: ε_c = -2A(1 + α_1 r_s) \\ln[1 + 1/(2A(β_1 r_s^{1/2} + β_2 r_s + β_3 r_s^{3/2}
              + β_4 r_s^2))]
    """
    rs = wigner_seitz_radius(rho)
    srs = jnp.sqrt(rs)
    a = params.a
    denom = 2.0 * a * (params.beta1 * srs + params.beta2 * rs + params.beta3 * rs * srs
                       + params.beta4 * rs * rs)
    return -2.0 * a * (1.0 + params.alpha1 * rs) * jnp.log1p(1.0 / denom)


def pw92_correlation_energy_density(rho: Array, params: PW92Params = PW92) -> Array:
    """PW92 correlation per volume, e_c = ρ ε_c(r_s) (libxc ``LDA_C_PW``)."""
    return rho * pw92_correlation_per_particle(rho, params)


def lda_energy_density(rho: Array, sigma: Array | None = None) -> Array:
    """LDA exchange-correlation per volume, Slater + PW92 (PySCF ``'LDA,PW'``); σ is ignored."""
    del sigma
    return lda_exchange_energy_density(rho) + pw92_correlation_energy_density(rho, PW92)


def pbe_exchange_energy_density(rho: Array, sigma: Array) -> Array:
    """PBE exchange per volume (libxc ``GGA_X_PBE``).

    .. math:: e_x = e_x^{LDA}(ρ) F_x(s),\\quad F_x = 1 + κ - κ/(1 + μ s^2/κ),\\quad
              s^2 = σ / (4 (3π^2)^{2/3} ρ^{8/3})
    """
    s2 = sigma / (4.0 * (3.0 * np.pi**2) ** (2.0 / 3.0) * rho ** (8.0 / 3.0))
    fx = 1.0 + PBE_KAPPA - PBE_KAPPA / (1.0 + PBE_MU * s2 / PBE_KAPPA)
    return lda_exchange_energy_density(rho) * fx


def pbe_correlation_energy_density(rho: Array, sigma: Array) -> Array:
    """PBE correlation per volume for ζ = 0 (libxc ``GGA_C_PBE``, PW92_MOD inside).

    .. math:: e_c = ρ [ε_c^{PW92}(r_s) + H],\\quad H = γ \\ln(1 + (β/γ) t^2 (1 + A t^2)/(1 + A t^2
              + A^2 t^4)),\\quad A = (β/γ)/(e^{-ε_c/γ} - 1),\\quad t^2 = σ π / (16 k_F ρ^2)

    with k_F = (3π²ρ)^{1/3}.
    """
    eps_c = pw92_correlation_per_particle(rho, PW92_MOD)
    kf = (3.0 * np.pi**2 * rho) ** (1.0 / 3.0)
    t2 = sigma * np.pi / (16.0 * kf * rho * rho)
    big_a = (PBE_BETA / PBE_GAMMA) / jnp.expm1(-eps_c / PBE_GAMMA)
    f1 = t2 * (1.0 + big_a * t2)
    h = PBE_GAMMA * jnp.log1p((PBE_BETA / PBE_GAMMA) * _saturating_ratio(f1, big_a))
    return rho * (eps_c + h)


@jax.custom_jvp
def _saturating_ratio(f, a):
    """q = f / (1 + a f), with a JVP free of the cancellation of the quotient rule.

    Autodiff of f/(1 + af) forms f'/(1 + af) - a f f'/(1 + af)², two nearly equal numbers when
    af ≫ 1 (large reduced gradient t in PBE correlation), which costs ~1e-8 relative accuracy in
    ∂e/∂σ; the exact form f'/(1 + af)² - f² a'/(1 + af)² has no cancellation.
    """
    return f / (1.0 + a * f)


@_saturating_ratio.defjvp
def _saturating_ratio_jvp(primals, tangents):
    f, a = primals
    df, da = tangents
    d = 1.0 + a * f
    return f / d, (df - f * f * da) / (d * d)


def pbe_energy_density(rho: Array, sigma: Array) -> Array:
    """PBE exchange-correlation per volume (PySCF ``'PBE'`` = ``GGA_X_PBE + GGA_C_PBE``)."""
    return pbe_exchange_energy_density(rho, sigma) + pbe_correlation_energy_density(rho, sigma)


#: Pointwise XC energy densities e(ρ, σ) per volume, by name.
XC_ENERGY_DENSITIES = {"lda": lda_energy_density, "pbe": pbe_energy_density}
#: Masked e(ρ, σ) used on the grid: points with ρ < 1e-14 (and for PBE σ < 1e-14) give 0
#: (spec §4.1).
MASKED_XC_ENERGY_DENSITIES = {
    "lda": masked_energy_density(lda_energy_density, uses_sigma=False),
    "pbe": masked_energy_density(pbe_energy_density, uses_sigma=True),
}


def xc_energy(coeffs: Float[Array, "naux"], bundle, functional: str = "pbe") -> Scalar:
    """E_XC[ρ_p] = Σ_g w_g e_xc(ρ(r_g), σ(r_g)) on the bundle's grid (Hartree, spec §4.1).

    Args:
      coeffs: ``(naux,)`` density coefficients p.
      bundle: an :class:`~mofdft_jax.bundle.IntegralBundle` with a grid (or a ``GridBundle``).
      functional: ``"lda"`` or ``"pbe"``.
    """
    grid = grid_of(bundle)
    return integrate_energy_density(MASKED_XC_ENERGY_DENSITIES[functional], coeffs, grid)


def lda_xc_energy(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """LDA (Slater + PW92) exchange-correlation energy on the grid, Hartree."""
    return xc_energy(coeffs, bundle, "lda")


def pbe_xc_energy(coeffs: Float[Array, "naux"], bundle) -> Scalar:
    """PBE exchange-correlation energy on the grid, Hartree."""
    return xc_energy(coeffs, bundle, "pbe")
