"""Hellmann–Feynman forces of a density in the density basis (spec §4.6).

.. math::  f_a = Z_a ∫ ρ_p(r) \\frac{r − R_a}{|r − R_a|³} dr
                 + Σ_{b≠a} Z_a Z_b \\frac{R_a − R_b}{|R_a − R_b|³}
           = F_a · p + f_a^{nn}

with the integrals F_aμ of ``bundle.hf_force`` (built on the host by
:func:`mofdft_jax.qchem.integrals.compute_hf_force_integrals`). Pulay terms are excluded, as in
the paper; the reference is the same formula at the fitted KS density p*. Units: Ha/Bohr. For
molecules too large to hold the ``(natm, 3, naux)`` integrals (``bundle.hf_force is None``) use the
blocked host route :func:`mofdft_jax.qchem.integrals.hf_forces`.
"""

from __future__ import annotations

import jax.numpy as jnp

from mofdft_jax.types import Array, Float


def nuclear_repulsion_forces(bundle) -> Float[Array, "natm 3"]:
    """``(natm, 3)`` f_a = Σ_{b≠a} Z_a Z_b (R_a − R_b)/|R_a − R_b|³ = −∂E_nn/∂R_a, Ha/Bohr."""
    coords = jnp.asarray(bundle.coords)
    z = jnp.asarray(bundle.atom_numbers, dtype=coords.dtype)
    diff = coords[:, None, :] - coords[None, :, :]
    natm = coords.shape[0]
    eye = jnp.eye(natm, dtype=bool)
    dist = jnp.sqrt(jnp.sum(diff**2, axis=-1) + eye)  # 1 on the diagonal: no 0/0
    inv3 = jnp.where(eye, 0.0, 1.0 / dist**3)
    return jnp.einsum("a,b,ab,abx->ax", z, z, inv3, diff)


def hf_forces(coeffs: Float[Array, "naux"], bundle) -> Float[Array, "natm 3"]:
    """``(natm, 3)`` Hellmann–Feynman plus nuclear-repulsion forces of ρ_p, Ha/Bohr (spec §4.6)."""
    if bundle.hf_force is None:
        raise ValueError("bundle.hf_force is None: build the bundle with with_forces=True or use "
                         "the blocked host route mofdft_jax.qchem.integrals.hf_forces")
    return jnp.einsum("axm,m->ax", bundle.hf_force, coeffs) + nuclear_repulsion_forces(bundle)
