"""The integral bundle: everything the device world needs to know about one molecule.

Built on the host by :func:`mofdft_jax.qchem.integrals.build_integral_bundle` (PySCF), consumed by
pure JAX energy terms ``term(coeffs, bundle) -> Hartree``. Every field is an array (or ``None`` when
the variant does not need it), so a bundle is a pytree that can be passed to ``jit``-ed drivers as an
argument: never close over it (XLA would embed it as a constant, environment_notes §4).

The density is expanded in the even-tempered density basis {ω_μ} (spec §1.4):

.. math::  ρ(r) = Σ_μ p_μ ω_μ(r)

Grid data are stored in blocks of points with screening (spec §4.1, issue 5): block ``b`` holds the
values and gradients of the ``nsig`` basis functions that are non-negligible on its points, with
their global indices in ``idx[b]``; padding entries have zero weight / zero values and index 0. A
small molecule is the special case of few blocks with ``nsig = naux``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from mofdft_jax.types import Array, Float, Int


class GridBundle(NamedTuple):
    """Quadrature grid with blocked, screened density-basis values.

    Attributes:
      weights: ``(nblk, blk)`` quadrature weights, 0 on padding points.
      coords: ``(nblk, blk, 3)`` point coordinates in Bohr (padding points anywhere).
      ao: ``(nblk, 4, blk, nsig)`` values ω_μ(r_g) and gradients ∂_x, ∂_y, ∂_z ω_μ(r_g) of the
        significant functions of each block (PySCF ``eval_gto(..., 'GTOval_sph_deriv1')`` layout).
      idx: ``(nblk, nsig)`` global density-basis index of each significant function (padding: 0, with
        zero columns in ``ao``).
    """

    weights: Float[Array, "nblk blk"]
    coords: Float[Array, "nblk blk 3"]
    ao: Float[Array, "nblk 4 blk nsig"]
    idx: Int[Array, "nblk nsig"]


class IntegralBundle(NamedTuple):
    """Per-geometry constants of the OFDFT energy (spec §4.1).

    Attributes:
      coulomb: ``(naux, naux)`` 2-centre Coulomb matrix W̃_μν = (ω_μ|ω_ν) (PySCF ``int2c2e``), or a
        compressed Coulomb operator for large systems (see ``functionals.hartree``).
      norm: ``(naux,)`` w_μ = ∫ω_μ; the electron count is wᵀp.
      v_ext: ``(naux,)`` (v_ext)_μ = -Σ_A Z_A ∫ω_μ(r)/|r - R_A| dr.
      n_electrons: ``()`` number of electrons N.
      e_nuc: ``()`` nuclear repulsion energy.
      atom_numbers: ``(natm,)`` atomic numbers Z.
      coords: ``(natm, 3)`` nuclear coordinates, Bohr.
      aux_atom: ``(naux,)`` index of the atom carrying each density-basis function.
      aux_l: ``(naux,)`` angular momentum of each density-basis function (PySCF order: the 2l+1
        real spherical components of a shell are contiguous), used by the local-frame rotations.
      overlap: ``(naux, naux)`` density-basis overlap W_μν = ⟨ω_μ|ω_ν⟩ (natural reparametrisation,
        spec §2.2, and density errors), or ``None`` when not needed.
      grid: quadrature grid data, ``None`` for grid-free targets (``txc``, ``tot``).
      hf_force: ``(natm, 3, naux)`` Hellmann–Feynman force integrals
        F_aμ = Z_a ∫ω_μ(r)(r - R_a)/|r - R_a|³ dr so that the electronic force on atom a is
        F_a·p (spec §4.6), or ``None`` when forces are computed on the host in blocks.
    """

    coulomb: object
    norm: Float[Array, "naux"]
    v_ext: Float[Array, "naux"]
    n_electrons: Float[Array, ""]
    e_nuc: Float[Array, ""]
    atom_numbers: Int[Array, "natm"]
    coords: Float[Array, "natm 3"]
    aux_atom: Int[Array, "naux"]
    aux_l: Int[Array, "naux"]
    grid: Optional[GridBundle] = None
    hf_force: Optional[Float[Array, "natm 3 naux"]] = None
    overlap: Optional[Float[Array, "naux naux"]] = None
