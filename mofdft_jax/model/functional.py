"""The learned functional: adapter statistics + Graphormer-3D + target name (spec §2, §3).

:class:`LearnedFunctional` is what the solver and the trainer use:

* ``geometry = functional.prepare(bundle)`` (host, once per geometry): checks that every element
  was seen in training and builds the :class:`~mofdft_jax.density.adapter.AdapterGeometry` with the
  functional's switches (local frames, natural reparametrisation);
* ``functional.energy(coeffs, bundle, geometry)`` → Hartree: the energy term of the OFDFT engine
  (``jax.grad`` gives the potential with respect to the raw p, through the whole adapter). Pass the
  functional, the bundle and the geometry as ARGUMENTS of the jitted driver (``eqx.filter_jit``);
  closing over the geometry would embed its ``(naux, naux)`` matrix as a constant;
* ``features = functional.geometry_features(bundle)`` (device, once per geometry and weights): the
  network's coefficient-independent part (attention bias, geometric node features), passed as
  ``energy(..., features=features)`` in every step of a density optimisation;
* ``functional.delta_coeffs(coeffs, bundle, geometry)`` → ``(naux,)`` the ProjMINAO correction
  Δp (add it to the MINAO coefficients), mapped back to raw p by Dᵀ M⁻ᵀ and projected onto wᵀΔp = 0
  (spec §3.1 item 6, SI B.5.2);
* ``functional.apply_slots(slots, atom_numbers, coords, ...)``: the same in the per-atom slot
  layout p′ (no geometry needed), for training on pre-transformed data and padded batches.

The energy is computed as (spec §2.4)

.. math::  T_θ(p) = [\\mathrm{NN}(λ (p′ - p̄)) + ḡᵀp′ + Σ_a T̄_{Z(a)} + T̄_{global}] / 627.509474…

in Hartree, the bracket in kcal/mol. Which energy it models is ``target``:

=========  =====================================  ==========================================
target     learned quantity (spec §1.6, §3.4)      terms the solver adds
=========  =====================================  ==========================================
``ts_res`` T_S - T_APBE                           T_APBE, E_xc (PBE, grid), E_H, E_ext, E_nn
``txc``    T_S + E_xc                             E_H, E_ext, E_nn (grid free)
``tot``    T_S + E_H + E_xc + E_ext + E_nn         nothing (grid free)
=========  =====================================  ==========================================

Train only ``functional.model`` (the statistics are constants; they are wrapped in
``stop_gradient``).
"""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from mofdft_jax.density.adapter import (
    ELEMENTS,
    AdapterGeometry,
    AdapterStatistics,
    atomref_energy,
    build_adapter_geometry,
    coeffs_to_slots,
    gather_from_slots,
    mirror_slots,
    standardise_coeffs,
    unstandardise_delta,
    untransform_coeffs,
)
from mofdft_jax.model.graphormer import GeometryFeatures, Graphormer3D, GraphormerConfig
from mofdft_jax.types import Array, Float, Int
from mofdft_jax.units import ELEMENT_SYMBOLS, HARTREE_TO_KCAL

#: Learned targets and the energy terms the solver must add to each (spec §3.4).
TARGETS = {
    "ts_res": ("kinetic_apbe", "xc_pbe", "hartree", "external", "nuclear"),
    "txc": ("hartree", "external", "nuclear"),
    "tot": (),
}


def _is_concrete(*arrays) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


class UnseenElementError(ValueError):
    """The molecule holds an element for which the functional has no training statistics."""


class LearnedFunctional(eqx.Module):
    """Learned energy functional of the density coefficients (spec §2–§3).

    Attributes:
      model: the :class:`~mofdft_jax.model.graphormer.Graphormer3D` network.
      statistics: the :class:`~mofdft_jax.density.adapter.AdapterStatistics` of the training set.
      target: ``"ts_res"``, ``"txc"`` or ``"tot"``.
      use_local_frames: the adapter rotates coefficients into local frames.
      use_reparam: the adapter uses the natural reparametrisation.
      parity_symmetric: the energy is averaged over the density and its mirror image
        (:func:`~mofdft_jax.density.adapter.mirror_slots`), so a structure and its mirror image
        get the same energy and a mirror-symmetric structure mirror-symmetric forces (twice the
        network cost).
    """

    model: Graphormer3D
    statistics: AdapterStatistics
    target: str = eqx.field(static=True)
    use_local_frames: bool = eqx.field(static=True, default=True)
    use_reparam: bool = eqx.field(static=True, default=True)
    parity_symmetric: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; choose from {sorted(TARGETS)}")

    @property
    def config(self) -> GraphormerConfig:
        """The network configuration."""
        return self.model.config

    # ---------------------------------------------------------------- host-side preparation
    def check_elements(self, atom_numbers) -> None:
        """Raise :class:`UnseenElementError` if an element has no training statistics."""
        seen = np.asarray(self.statistics.element_seen)
        for a, z in enumerate(np.asarray(atom_numbers).tolist()):
            if z == 0:
                continue
            if z not in ELEMENTS:
                raise UnseenElementError(f"atom {a}: element Z={z} is not supported by the learned "
                                         "functional (H, C, N, O, F only)")
            if not seen[ELEMENTS.index(z)]:
                trained = ", ".join(ELEMENT_SYMBOLS[e] for e, s in zip(ELEMENTS, seen) if s)
                raise UnseenElementError(
                    f"atom {a}: element {ELEMENT_SYMBOLS[z]} never appeared in this functional's "
                    f"training data (trained on {trained}); its statistics are unknown")

    def prepare(self, bundle, overlap_root=None) -> AdapterGeometry:
        """Check the elements and build the adapter geometry of ``bundle`` (host, once); for large
        molecules pass a local overlap root (``qchem.coulomb_blocks.build_local_overlap_root``)."""
        self.check_elements(bundle.atom_numbers)
        return build_adapter_geometry(bundle, use_local_frames=self.use_local_frames,
                                      use_reparam=self.use_reparam, overlap_root=overlap_root)

    def _check_geometry(self, geometry: AdapterGeometry) -> None:
        if (geometry.rot_index is not None) != self.use_local_frames:
            raise ValueError(f"geometry built with local frames "
                             f"{'on' if geometry.rot_index is not None else 'off'}, the functional "
                             f"expects {'on' if self.use_local_frames else 'off'} "
                             "(use functional.prepare(bundle))")
        has_reparam = geometry.overlap_vecs is not None or geometry.overlap_root is not None
        if has_reparam != self.use_reparam:
            raise ValueError("geometry and functional disagree on the natural reparametrisation "
                             "(use functional.prepare(bundle))")

    # ---------------------------------------------------------------- device functions
    def apply_slots(self, slots: Float[Array, "natm 477"], atom_numbers: Int[Array, "natm"],
                    coords: Float[Array, "natm 3"], *, key=None, inference: bool = True,
                    with_delta: bool = False, features: Optional[GeometryFeatures] = None):
        """Energy (kcal/mol) and standardised Δp̃ from p′ in the slot layout.

        Args:
          slots: ``(natm, 477)`` p′ (local frame, reparametrised; not centred or scaled).
          atom_numbers: ``(natm,)``, 0 for padding atoms.
          coords: ``(natm, 3)`` Bohr.
          key, inference: dropout control (training: ``inference=False`` and a key).
          with_delta: also return the Δp head output.
          features: the network's :class:`~mofdft_jax.model.graphormer.GeometryFeatures` for this
            geometry (:meth:`geometry_features`), or ``None`` to compute them in the call.

        Returns:
          ``(energy_kcal, delta)``: the scalar NN + AtomRef energy in kcal/mol and the
          standardised Δp̃ ``(natm, 477)`` (``None`` unless ``with_delta``).
        """
        stats = jax.lax.stop_gradient(self.statistics)

        def one(s, with_delta):
            out = self.model(atom_numbers, coords, standardise_coeffs(s, atom_numbers, stats),
                             key=key, inference=inference, with_delta=with_delta,
                             features=features)
            return out.energy + atomref_energy(s, atom_numbers, stats), out.delta

        energy, delta = one(slots, with_delta)
        if self.parity_symmetric:
            # E(p′) = ½ [E_θ(p′) + E_θ(p′ of the mirror image)]: the same energy for a molecule
            # and its mirror image (mirror_slots; distances, the network's only geometric input,
            # are mirror invariant). The Δp head is read from the original only.
            mirrored, _ = one(mirror_slots(slots), False)
            energy = 0.5 * (energy + mirrored)
        return energy, delta

    def geometry_features(self, bundle) -> GeometryFeatures:
        """The network's coefficient-independent inputs for ``bundle``'s nuclei (attention bias,
        geometric node features; :meth:`Graphormer3D.geometry_features`): compute once per
        geometry and pass as ``features`` to every step of a density optimisation."""
        return self.model.geometry_features(bundle.atom_numbers, bundle.coords)

    def energy_kcal(self, coeffs: Float[Array, "naux"], bundle, geometry: AdapterGeometry, *,
                    key=None, inference: bool = True,
                    features: Optional[GeometryFeatures] = None) -> Float[Array, ""]:
        """The learned energy in kcal/mol (see :meth:`energy`)."""
        self._check_geometry(geometry)
        if _is_concrete(bundle.atom_numbers, self.statistics.element_seen):
            self.check_elements(bundle.atom_numbers)
        slots = coeffs_to_slots(coeffs, geometry)
        energy, _ = self.apply_slots(slots, bundle.atom_numbers, bundle.coords, key=key,
                                     inference=inference, features=features)
        return energy

    def energy(self, coeffs: Float[Array, "naux"], bundle, geometry: AdapterGeometry, *,
               key=None, inference: bool = True,
               features: Optional[GeometryFeatures] = None) -> Float[Array, ""]:
        """The learned energy term in Hartree: T_θ(p) of spec §2.4 divided by 627.509….

        Args:
          coeffs: ``(naux,)`` raw density coefficients p.
          bundle: an :class:`~mofdft_jax.bundle.IntegralBundle` (uses ``atom_numbers``, ``coords``).
          geometry: from :meth:`prepare`.
          features: from :meth:`geometry_features` for the same weights and nuclei, or ``None``.
        """
        return self.energy_kcal(coeffs, bundle, geometry, key=key, inference=inference,
                                features=features) / HARTREE_TO_KCAL

    def delta_coeffs(self, coeffs: Float[Array, "naux"], bundle,
                     geometry: AdapterGeometry) -> Float[Array, "naux"]:
        """ProjMINAO correction Δp in raw coefficients (spec §3.1 item 6, SI B.5.2).

        The Δp head output is un-standardised (× std + mean per slot), gathered back to the
        function order, mapped to raw p by Dᵀ M⁻ᵀ, and projected: Δp ← Δp - (wᵀΔp / wᵀw) w with
        w = ``bundle.norm``, so p_init = p_MINAO + Δp keeps the electron count.
        """
        self._check_geometry(geometry)
        if _is_concrete(bundle.atom_numbers, self.statistics.element_seen):
            self.check_elements(bundle.atom_numbers)
        slots = coeffs_to_slots(coeffs, geometry)
        _, delta = self.apply_slots(slots, bundle.atom_numbers, bundle.coords, with_delta=True)
        delta_prime = unstandardise_delta(delta, bundle.atom_numbers, self.statistics)
        delta_p = untransform_coeffs(gather_from_slots(delta_prime, geometry), geometry)
        w = bundle.norm
        return delta_p - (delta_p @ w) / (w @ w) * w


def make_learned_functional(config: GraphormerConfig, statistics: AdapterStatistics,
                            target: str, *, key, use_local_frames: bool = True,
                            use_reparam: bool = True, parity_symmetric: bool = False,
                            model: Optional[Graphormer3D] = None) -> LearnedFunctional:
    """A freshly initialised (or given-``model``) :class:`LearnedFunctional`."""
    if model is None:
        model = Graphormer3D(config, key=key)
    elif model.config != config:
        raise ValueError("model.config differs from the config given to make_learned_functional")
    stats = jax.tree.map(jnp.asarray, statistics)
    return LearnedFunctional(model=model, statistics=stats, target=target,
                             use_local_frames=use_local_frames, use_reparam=use_reparam,
                             parity_symmetric=parity_symmetric)
