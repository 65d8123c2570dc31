"""Real solid harmonics and real Wigner-D matrices in PySCF's ordering (l ≤ 4, spec §2.1).

PySCF's spherical functions are real solid harmonics times a radial Gaussian. Their angular parts
are the standard real spherical harmonics (no Condon–Shortley phase, all components normalised
alike)

.. math::

    S_{l,0} = N_{l0}\\,Π_l^0(z, r),\\quad
    S_{l,m>0} = \\sqrt2 N_{lm}\\,Π_l^m(z, r)\\,\\mathrm{Re}(x + iy)^m,\\quad
    S_{l,m<0} = \\sqrt2 N_{l|m|}\\,Π_l^{|m|}(z, r)\\,\\mathrm{Im}(x + iy)^{|m|},

with N_lm = √((2l+1)/(4π) · (l-m)!/(l+m)!) and the polynomial
Π_l^m(z, r) = Σ_k (-1)^k 2^{-l} C(l,k) C(2l-2k,l) (l-2k)!/(l-2k-m)! r^{2k} z^{l-2k-m}
(r^l times the associated Legendre function without the Condon–Shortley phase). Components are
ordered m = -l..l, except p shells, which PySCF orders (x, y, z) = (m=1, m=-1, m=0).

The real Wigner-D matrix of a rotation R (3×3, orthogonal, det +1) is defined by

.. math::  S_l(R u) = D^l(R)\\, S_l(u)\\quad\\text{for all } u ∈ ℝ^3,

so D^l is orthogonal and D^l(R₁R₂) = D^l(R₁) D^l(R₂). It is obtained exactly (up to rounding) by
least squares on a fixed set of sample points: D = S(R U) S(U)⁺. Expansion coefficients of a
function Σ_m c_m S_m(r - R_a) expressed in the rotated coordinates r' = R(r - R_a) are
c' = D^l(R) c:
this is the local-frame transform p′ = D p of spec §2.1.

This is per-geometry setup work (host NumPy, float64); it is imported by the device-world adapter
and never imports PySCF.
"""

from __future__ import annotations

import functools
import math

import numpy as np

#: Highest angular momentum of the even-tempered density basis (g functions, spec §1.4).
MAX_L = 4


def _legendre_poly_terms(l: int, m: int) -> list[tuple[float, int, int]]:
    """Terms (coefficient, power of r², power of z) of Π_l^m(z, r)."""
    terms = []
    for k in range((l - m) // 2 + 1):
        c = ((-1) ** k * 2.0 ** (-l) * math.comb(l, k) * math.comb(2 * l - 2 * k, l)
             * math.factorial(l - 2 * k) / math.factorial(l - 2 * k - m))
        terms.append((c, k, l - 2 * k - m))
    return terms


def _pyscf_m_order(l: int) -> list[int]:
    """The m value of each component of a shell in PySCF order."""
    if l == 1:
        return [1, -1, 0]
    return list(range(-l, l + 1))


def real_solid_harmonics(l: int, xyz: np.ndarray) -> np.ndarray:
    """Real solid harmonics S_lm(x, y, z) = r^l Y_lm(r̂) in PySCF order.

    Args:
      l: angular momentum, 0 ≤ l.
      xyz: ``(..., 3)`` points.

    Returns:
      ``(..., 2l+1)`` values; the angular factor of PySCF's spherical GTOs of degree l.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    r2 = x * x + y * y + z * z
    xy_power = [np.ones_like(x, dtype=np.complex128)]
    for _ in range(l):
        xy_power.append(xy_power[-1] * (x + 1j * y))
    out = []
    for m in _pyscf_m_order(l):
        am = abs(m)
        norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - am)
                         / math.factorial(l + am))
        poly = sum(c * r2 ** k * z ** pz for c, k, pz in _legendre_poly_terms(l, am))
        if m == 0:
            out.append(norm * poly)
        elif m > 0:
            out.append(math.sqrt(2.0) * norm * poly * xy_power[am].real)
        else:
            out.append(math.sqrt(2.0) * norm * poly * xy_power[am].imag)
    return np.stack(out, axis=-1)


@functools.lru_cache(maxsize=None)
def _sample_points(l: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed well-spread sample points and the pseudo-inverse of S_l at them."""
    n = 4 * (2 * l + 1) + 8
    # Fibonacci sphere: deterministic, well conditioned for every l ≤ MAX_L
    i = np.arange(n) + 0.5
    theta = np.arccos(1.0 - 2.0 * i / n)
    phi = np.pi * (1.0 + 5.0 ** 0.5) * i
    pts = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1)
    values = real_solid_harmonics(l, pts)  # (n, 2l+1)
    pinv = np.linalg.pinv(values)  # (2l+1, n)
    pts.setflags(write=False)
    pinv.setflags(write=False)
    return pts, pinv


def wigner_d_real(l: int, rotations: np.ndarray) -> np.ndarray:
    """Real Wigner-D matrices D^l(R) in PySCF order, defined by S_l(R u) = D^l(R) S_l(u).

    Args:
      l: angular momentum, 0 ≤ l ≤ 4 (any l works; the density basis stops at 4).
      rotations: ``(..., 3, 3)`` rotation matrices.

    Returns:
      ``(..., 2l+1, 2l+1)`` orthogonal matrices.
    """
    rotations = np.asarray(rotations, dtype=np.float64)
    if l == 0:
        return np.ones(rotations.shape[:-2] + (1, 1))
    pts, pinv = _sample_points(l)
    rotated = np.einsum("...ij,nj->...ni", rotations, pts)  # (..., n, 3) points R u
    values = real_solid_harmonics(l, rotated)  # (..., n, 2l+1) rows S(R u_n)
    # S(R U)ᵀ = D S(U)ᵀ  ⇒  Dᵀ = S(U)⁺ S(R U)
    return np.swapaxes(np.einsum("mn,...nk->...mk", pinv, values), -1, -2)
