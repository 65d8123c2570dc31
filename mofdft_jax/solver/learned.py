"""The OFDFT energy of a learned functional, for :func:`mofdft_jax.solver.solve` (spec §3.4, §4.1).

Which terms are added to the learned one depends on the functional's target (spec §1.6, §3.4):

=========  ===========================================================  ========================
target     energy of the solver                                         terms reported
=========  ===========================================================  ========================
``ts_res`` T_θ,res(p) + T_APBE(p) + E_H(p) + E_XC(p) + E_ext(p) + E_nn  ``kinetic`` (APBE + T_θ),
                                                                        ``hartree``, ``xc``,
                                                                        ``external``, ``nuclear``
``txc``    E_θ,TXC(p) + E_H(p) + E_ext(p) + E_nn   (no grid)            ``kinetic_xc``,
                                                                        ``hartree``,
                                                                        ``external``, ``nuclear``
``tot``    E_θ,tot(p)   (the label is the KS total energy of each SCF   ``total``
           step, E_nn included, so nothing is added; no grid)
=========  ===========================================================  ========================

The solver jit-compiles with the energy function as a *static* argument and the per-molecule data
as an ordinary argument. Here that argument is a :class:`LearnedInputs`: the integral bundle, the
adapter geometry (frames, Wigner-D, overlap eigenvectors), the functional's arrays and the
network's geometry features (attention bias and geometric node features, computed once per
molecule because the nuclei do not move during a density optimisation), so neither the network
weights nor the ``(naux, naux)`` geometry are embedded in the compiled code; the energy function
closes over the static part of the functional only.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp

from mofdft_jax.density.adapter import AdapterGeometry
from mofdft_jax.functionals import external_energy, grid_energy_terms, hartree_energy
from mofdft_jax.model.graphormer import cast_floats


class LearnedInputs(NamedTuple):
    """Per-molecule argument of the solver for a learned functional (a pytree).

    Attributes:
      bundle: the :class:`~mofdft_jax.bundle.IntegralBundle` (with a grid for ``ts_res``).
      geometry: the :class:`~mofdft_jax.density.adapter.AdapterGeometry` from
        ``functional.prepare(bundle)``.
      params: the array part of the :class:`~mofdft_jax.model.functional.LearnedFunctional`
        (``eqx.partition(functional, eqx.is_array)[0]``).
      features: the network's :class:`~mofdft_jax.model.graphormer.GeometryFeatures` for these
        weights and the bundle's nuclei, or ``None`` (then every step rebuilds them). They are
        stale once the nuclei or the weights change: build new inputs with
        :func:`make_learned_inputs` rather than ``_replace``-ing the bundle.
    """

    bundle: object
    geometry: AdapterGeometry
    params: object
    features: object = None

    @property
    def norm(self):
        """w of the bundle (the solver's electron-count constraint)."""
        return self.bundle.norm

    @property
    def n_electrons(self):
        return self.bundle.n_electrons


def split_learned_functional(functional):
    """``(params, static)`` of a learned functional: its arrays and the rest."""
    return eqx.partition(functional, eqx.is_array)


def make_learned_inputs(functional, bundle, geometry: AdapterGeometry | None = None
                        ) -> LearnedInputs:
    """Bundle + geometry (built with ``functional.prepare`` when not given) + functional arrays +
    the network's geometry features.

    The geometry features (attention bias Ẽ and the distance part of the node embedding) do not
    depend on the coefficients; they are computed here once instead of in every solver step
    (709-atom protein, ``small`` network: 0.49 s of a 1.07 s value-and-gradient). A network with
    ``compute_dtype="float32"`` gets its weights cast to float32 here, once per molecule, instead
    of in every solver step (the cast of the paper-size network's 362 MB of float64 weights made
    the float32 step slower than the float64 one: 188 vs 168 ms, ethanol). The values are the
    same: the network casts to float32 either way.
    """
    geometry = functional.prepare(bundle) if geometry is None else geometry
    params, static = split_learned_functional(functional)
    if functional.model.config.compute_dtype == "float32":
        params = eqx.tree_at(lambda f: f.model, params, cast_floats(params.model, jnp.float32))
    features = _geometry_features_jit(eqx.combine(params, static), bundle)
    return LearnedInputs(bundle=bundle, geometry=geometry, params=params, features=features)


@eqx.filter_jit
def _geometry_features_jit(functional, bundle):
    return functional.geometry_features(bundle)


def make_learned_energy_fn(functional, *, xc: str = "pbe", kinetic_base: str = "apbe"):
    """``energy_terms_fn(coeffs, inputs: LearnedInputs) -> {term: Ha}`` (see module docstring).

    Args:
      functional: a :class:`~mofdft_jax.model.functional.LearnedFunctional` (only its static part
        is captured; the arrays travel in :class:`LearnedInputs`).
      xc: XC functional added for ``ts_res`` (the labels' functional, PBE in the paper).
      kinetic_base: the base kinetic functional of ``ts_res`` (APBE in the paper).
    """
    _, static = split_learned_functional(functional)
    target = static.target

    def energy_terms_fn(coeffs, inputs: LearnedInputs) -> dict:
        learned = eqx.combine(inputs.params, static)
        bundle = inputs.bundle
        model = learned.energy(coeffs, bundle, inputs.geometry, features=inputs.features)
        if target == "tot":
            return {"total": model}
        nuclear = jnp.asarray(bundle.e_nuc, dtype=coeffs.dtype)
        if target == "txc":
            return {"kinetic_xc": model, "hartree": hartree_energy(coeffs, bundle),
                    "external": external_energy(coeffs, bundle), "nuclear": nuclear}
        if bundle.grid is None:
            raise ValueError("the ts_res functional needs the grid terms (T_APBE, E_XC): build the "
                             "bundle with a grid level")
        grid = grid_energy_terms(coeffs, bundle, kinetic=kinetic_base, xc=xc.lower())
        return {"kinetic": grid["kinetic"] + model, "hartree": hartree_energy(coeffs, bundle),
                "xc": grid["xc"], "external": external_energy(coeffs, bundle),
                "nuclear": nuclear}

    return energy_terms_fn


def projminao_delta(functional, coeffs, bundle, geometry: AdapterGeometry):
    """ProjMINAO correction Δp at ``coeffs`` (spec §4.3): the Δp head, back-transformed to raw p
    and projected to wᵀΔp = 0 (:meth:`LearnedFunctional.delta_coeffs`), jit-compiled with the
    functional and the data as arguments."""
    return _delta_jit(functional, jnp.asarray(coeffs, dtype=jnp.float64), bundle, geometry)


@eqx.filter_jit
def _delta_jit(functional, coeffs, bundle, geometry):
    return functional.delta_coeffs(coeffs, bundle, geometry)
