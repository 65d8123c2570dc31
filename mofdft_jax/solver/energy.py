"""Composition of the OFDFT energy from its terms (spec §4.1, §3.4).

.. math::  E(p) = T(p) + ½ pᵀW̃p + E_XC(p) + pᵀv_ext + E_nn

Every term is a plain callable ``term(coeffs, bundle) -> Hartree`` (house rule); the kinetic
functional is just one more term. That is how every M-OFDFT variant plugs in (spec §3.4):

========================  ============================================  ====================
variant                   ``kinetic_fn``                                 other terms
========================  ============================================  ====================
classical OFDFT           ``"tf"``, ``"vw"``, ``"tf+1/9vw"``, ``"apbe"``  Hartree, PBE, external
T_S,res (ethanol, QM9)    ``lambda p, b: T_APBE(p, b) + model(p, b)``    Hartree, PBE, external
E_TXC (QMugs, timing)     ``model`` (returns T_S + E_XC)                 ``xc=None``
E_tot (chignolin)         not used: the model is passed to ``solve``     —
                          directly as the whole energy function
========================  ============================================  ====================

:func:`make_energy_fn` is memoised on its (hashable) arguments, so asking twice for the same
functional returns the *same* function objects, and the jitted solver (which takes the energy
function as a static argument) does not recompile.
"""

from __future__ import annotations

import functools
from typing import Callable, Union

import jax.numpy as jnp

from mofdft_jax.types import Array, Float

TermFn = Callable[..., Float[Array, ""]]
TermsFn = Callable[..., dict]

#: Names of the terms, in the order they are summed and reported.
TERM_NAMES = ("kinetic", "hartree", "xc", "external", "negative_density", "nuclear")
#: Terms included by default (the nuclear repulsion is controlled by ``nuclear=``).
DEFAULT_INCLUDE = ("kinetic", "hartree", "xc", "external")


def resolve_kinetic_fn(kinetic_fn: Union[str, TermFn]) -> TermFn:
    """A kinetic term from a name of ``functionals.KINETIC_FUNCTIONALS`` or a callable."""
    if callable(kinetic_fn):
        return kinetic_fn
    from mofdft_jax.functionals import KINETIC_FUNCTIONALS

    try:
        return KINETIC_FUNCTIONALS[kinetic_fn]
    except KeyError:
        raise ValueError(f"unknown kinetic functional {kinetic_fn!r}; "
                         f"choose one of {sorted(KINETIC_FUNCTIONALS)}") from None


def resolve_xc_fn(xc: Union[str, TermFn, None]) -> TermFn | None:
    """An exchange-correlation term from a name of ``functionals.XC_FUNCTIONALS``, a callable or
    ``None`` (no XC term, e.g. when the learned functional returns T_S + E_XC)."""
    if xc is None or callable(xc):
        return xc
    from mofdft_jax.functionals import XC_FUNCTIONALS

    try:
        return XC_FUNCTIONALS[xc.lower()]
    except KeyError:
        raise ValueError(f"unknown XC functional {xc!r}; choose one of {sorted(XC_FUNCTIONALS)}"
                         ) from None


def integrated_negative_density(coeffs: Float[Array, "naux"], bundle) -> Float[Array, ""]:
    """ν(p) = Σ_g w_g max(−ρ(r_g), 0) = ∫ρ₋, electrons, on the bundle's grid (ρ = Σ_μ p_μ ω_μ).

    Its gradient is −Σ_g w_g ω_μ(r_g) over the points with ρ < 0 (a subgradient: 0 at ρ = 0).
    """
    from mofdft_jax.functionals import density_on_grid
    from mofdft_jax.functionals.grid import grid_of

    grid = grid_of(bundle)
    rho, _ = density_on_grid(coeffs, grid)
    return jnp.sum(grid.weights * jnp.maximum(-rho, 0.0))


def sum_terms(terms: dict) -> Float[Array, ""]:
    """Total of a dict of scalar terms, summed in insertion order (deterministic)."""
    return functools.reduce(jnp.add, terms.values(), jnp.zeros(()))


@functools.lru_cache(maxsize=64)
def make_energy_fn(kinetic_fn: Union[str, TermFn, None], *, xc: Union[str, TermFn, None] = "pbe",
                   include: tuple[str, ...] = DEFAULT_INCLUDE,
                   nuclear: bool = True,
                   negative_density_penalty: float = 0.0) -> tuple[TermsFn, TermFn]:
    """Build the OFDFT energy of a kinetic functional (spec §4.1 Eq. 1).

    Args:
      kinetic_fn: name in ``functionals.KINETIC_FUNCTIONALS`` (``tf``, ``vw``, ``tf+1/9vw``,
        ``tf+vw``, ``apbe``) or any callable ``(coeffs, bundle) -> Ha`` (a learned functional).
      xc: ``"pbe"``, ``"lda"``, a callable term, or ``None`` for no XC term.
      include: which of ``kinetic``, ``hartree``, ``xc``, ``external`` enter the energy.
      nuclear: add the constant nuclear repulsion E_nn (``bundle.e_nuc``) as the term ``nuclear``.
      negative_density_penalty: c ≥ 0, Ha per electron: when positive, the term
        ``negative_density`` = c · Σ_g w_g max(−ρ(r_g), 0) (:func:`integrated_negative_density`)
        is added, the paper's optional penalty (spec §4.2, SI B.5.1; off by default, as in the
        paper). It needs the grid.

    Returns:
      ``(energy_terms_fn, energy_fn)``: ``energy_terms_fn(coeffs, bundle)`` returns a dict
      ``{name: scalar Ha}`` of the included terms (keys in :data:`TERM_NAMES` order) and
      ``energy_fn(coeffs, bundle)`` their sum, the total energy including E_nn. Both are pure and
      differentiable; :func:`mofdft_jax.solver.solve` accepts either (passing the terms function
      records every term along the trajectory at no extra cost).
    """
    if negative_density_penalty < 0.0:
        raise ValueError(f"negative_density_penalty must be >= 0, got {negative_density_penalty}")
    unknown = set(include) - set(DEFAULT_INCLUDE)
    if unknown:
        raise ValueError(f"unknown energy terms {sorted(unknown)}; choose from {DEFAULT_INCLUDE}")
    from mofdft_jax.functionals import external_energy, hartree_energy

    fns: dict[str, TermFn] = {}
    if "kinetic" in include:
        if kinetic_fn is None:
            raise ValueError("include has 'kinetic' but kinetic_fn is None")
        fns["kinetic"] = resolve_kinetic_fn(kinetic_fn)
    if "hartree" in include:
        fns["hartree"] = hartree_energy
    if "xc" in include:
        xc_fn = resolve_xc_fn(xc)
        if xc_fn is not None:
            fns["xc"] = xc_fn
    if "external" in include:
        fns["external"] = external_energy
    # two named grid functionals read the same ρ, ∇ρ: evaluate them in one pass over the grid
    fused = (isinstance(kinetic_fn, str) and isinstance(xc, str) and "kinetic" in fns
             and "xc" in fns)

    def energy_terms_fn(coeffs, bundle) -> dict:
        if fused:
            from mofdft_jax.functionals import grid_energy_terms

            grid_terms = grid_energy_terms(coeffs, bundle, kinetic=kinetic_fn, xc=xc.lower())
            terms = {name: grid_terms[name] if name in grid_terms else fn(coeffs, bundle)
                     for name, fn in fns.items()}
        else:
            terms = {name: fn(coeffs, bundle) for name, fn in fns.items()}
        if negative_density_penalty > 0.0:
            terms["negative_density"] = (negative_density_penalty
                                         * integrated_negative_density(coeffs, bundle))
        if nuclear:
            terms["nuclear"] = jnp.asarray(bundle.e_nuc, dtype=coeffs.dtype)
        return terms

    def energy_fn(coeffs, bundle) -> Float[Array, ""]:
        return sum_terms(energy_terms_fn(coeffs, bundle))

    return energy_terms_fn, energy_fn
