"""Per-geometry integrals of the OFDFT energy in the density basis (spec §4.1, §4.6).

Everything here is host code (PySCF); the result is an :class:`~mofdft_jax.bundle.IntegralBundle`
of float64 JAX arrays that the device world consumes.

=====================  ====================================================================
quantity               definition (density basis {ω_μ}, nuclei Z_A at R_A)
=====================  ====================================================================
``coulomb`` W̃          W̃_μν = (ω_μ|ω_ν) = ∫∫ ω_μ(r) ω_ν(r') / |r - r'|   (``int2c2e``)
``overlap`` W          W_μν = ⟨ω_μ|ω_ν⟩                                    (``int1e_ovlp``)
``norm`` w             w_μ = ∫ ω_μ; only s functions contribute (analytic, below)
``v_ext``              v_μ = -Σ_A Z_A ∫ ω_μ(r)/|r - R_A| (``int2c2e`` against point charges)
``hf_force``           F_aμ = Z_a ∫ ω_μ(r) (r - R_a)/|r - R_a|³ dr, so that the electronic
                       Hellmann–Feynman force on atom a is F_a · p (spec §4.6)
=====================  ====================================================================

Point charges are PySCF's ``gto.fakemol_for_charges`` (normalised s Gaussians of exponent 1e16),
so v_ext and F are exact 2-centre integrals rather than quadratures; both are checked against
quadrature and finite differences in ``tests/qchem/test_integrals.py``.
"""

from __future__ import annotations

import numpy as np
from pyscf import gto

from mofdft_jax.bundle import IntegralBundle
from mofdft_jax.qchem.basis import aux_function_atoms, aux_function_l

#: Real solid-harmonic prefactor of an s function in libcint, Y_00 = 1/(2√π).
_Y00 = 0.282094791773878143


def compute_aux_norm(auxmol: gto.Mole) -> np.ndarray:
    """``(naux,)`` w_μ = ∫ω_μ(r) dr of the density basis, analytically.

    An s shell is ω(r) = Y_00 Σ_i c_i exp(-α_i r²) with libcint-normalised c_i, so
    w = Y_00 Σ_i c_i (π/α_i)^{3/2}; functions with l > 0 integrate to zero (spec §4.1).
    """
    norm = np.zeros(auxmol.nao_nr())
    ao_loc = auxmol.ao_loc_nr()
    for b in range(auxmol.nbas):
        if auxmol.bas_angular(b) != 0:
            continue
        exps = auxmol.bas_exp(b)
        coeff = auxmol._libcint_ctr_coeff(b)  # (nprim, nctr), includes the primitive norms
        norm[ao_loc[b]:ao_loc[b + 1]] = _Y00 * ((np.pi / exps) ** 1.5) @ coeff
    return norm


def compute_v_ext(mol: gto.Mole, auxmol: gto.Mole) -> np.ndarray:
    """``(naux,)`` external-potential vector v_μ = -Σ_A Z_A ∫ω_μ(r)/|r - R_A| dr (spec §4.1)."""
    charges = gto.fakemol_for_charges(mol.atom_coords())
    return -gto.intor_cross("int2c2e", auxmol, charges) @ mol.atom_charges().astype(np.float64)


def compute_hf_force_integrals(mol: gto.Mole, auxmol: gto.Mole,
                               atoms: np.ndarray | None = None) -> np.ndarray:
    """``(natm, 3, naux)`` Hellmann–Feynman integrals F_aμ = Z_a ∫ω_μ(r)(r - R_a)/|r - R_a|³.

    With the point charge g_a at R_a, (g_a|ω_μ) = ∫ω_μ/|r - R_a| and ∂/∂R_a = -∇_r acting on g_a,
    so F_aμ = Z_a ∂(g_a|ω_μ)/∂R_a = -Z_a (∇g_a|ω_μ) (PySCF ``int2c2e_ip1``). The electronic force
    on atom a is F_a · p (spec §4.6); the nuclear-repulsion force is added by :func:`hf_forces`.

    Args:
      atoms: optional subset of atom indices (memory: 3·len(atoms)·naux floats).
    """
    coords = mol.atom_coords()
    charges = mol.atom_charges().astype(np.float64)
    if atoms is None:
        atoms = np.arange(mol.natm)
    atoms = np.asarray(atoms)
    fake = gto.fakemol_for_charges(coords[atoms])
    ip = gto.intor_cross("int2c2e_ip1", fake, auxmol)  # (3, len(atoms), naux)
    return -np.einsum("xan,a->axn", ip, charges[atoms])


def compute_nuclear_forces(mol: gto.Mole) -> np.ndarray:
    """``(natm, 3)`` nuclear-repulsion forces -∂E_nn/∂R_a = Σ_b Z_a Z_b (R_a - R_b)/|R_a - R_b|³.

    Ha/Bohr; equals PySCF's ``-grad_nuc(mol)`` (tested).
    """
    charges = mol.atom_charges().astype(np.float64)
    coords = mol.atom_coords()
    diff = coords[:, None, :] - coords[None, :, :]
    dist = np.linalg.norm(diff, axis=-1)
    np.fill_diagonal(dist, np.inf)
    return np.einsum("a,b,abx->ax", charges, charges, diff / dist[..., None] ** 3)


def hf_forces(p, mol: gto.Mole, auxmol: gto.Mole, *, atoms_per_block: int = 16) -> np.ndarray:
    """``(natm, 3)`` total Hellmann–Feynman forces of the fitted density ρ_p (spec §4.6), Ha/Bohr.

    f_a = Z_a ∫ρ_p(r)(r - R_a)/|r - R_a|³ dr - ∂E_nn/∂R_a. Pulay terms are excluded, as in the
    paper. Works in blocks of atoms so large molecules never hold the (natm, 3, naux) array.
    """
    p = np.asarray(p, dtype=np.float64)
    out = compute_nuclear_forces(mol)
    for a0 in range(0, mol.natm, atoms_per_block):
        atoms = np.arange(a0, min(a0 + atoms_per_block, mol.natm))
        out[atoms] += compute_hf_force_integrals(mol, auxmol, atoms) @ p
    return out


def _coulomb_operator(auxmol: gto.Mole, kind: str):
    if kind == "dense":
        import jax.numpy as jnp

        return jnp.asarray(auxmol.intor("int2c2e"))
    if kind == "compressed":
        from mofdft_jax.qchem.coulomb_blocks import build_compressed_coulomb

        return build_compressed_coulomb(auxmol)
    if kind == "none":
        return None
    raise ValueError(f"coulomb must be 'dense', 'compressed' or 'none', got {kind!r}")


def build_integral_bundle(mol: gto.Mole, auxmol: gto.Mole, *, grid_level: int | None = 2,
                          with_forces: bool = True, with_overlap: bool = True,
                          coulomb: str = "dense", grids=None,
                          grid_padding: tuple[int, int] = (1, 1),
                          grid_dtype: str = "float64") -> IntegralBundle:
    """The :class:`IntegralBundle` of one molecule (spec §4.1), as float64 JAX arrays.

    Args:
      mol: orbital-basis molecule (:func:`mofdft_jax.qchem.basis.make_mol`).
      auxmol: density-basis molecule (:func:`mofdft_jax.qchem.basis.make_auxmol`).
      grid_level: PySCF grid level of the XC / kinetic quadrature (spec §4.1: 2), or ``None`` for
        grid-free targets (``txc``, ``tot``).
      with_forces: include the ``(natm, 3, naux)`` Hellmann–Feynman integrals.
      with_overlap: include the density-basis overlap W.
      coulomb: ``"dense"`` (the ``(naux, naux)`` W̃), ``"compressed"`` (exact near field +
        multipole far field, :func:`mofdft_jax.qchem.coulomb_blocks.build_compressed_coulomb`, for
        molecules whose dense W̃ does not fit in memory) or ``"none"``.
      grids: optional built PySCF ``Grids`` to use for the grid terms (e.g. the KS calculation's own
        grid, so that E_XC of orbitals and of fitted densities share the points).
      grid_padding: ``(block_multiple, function_multiple)`` of
        :func:`~mofdft_jax.qchem.grids.build_grid_bundle` (zero padding that changes no grid term
        and lets molecules of similar size share compiled solvers).
      grid_dtype: storage type of the grid's basis values, ``"float64"`` (default) or
        ``"float32"`` (explicit option: half the memory, faster grid terms, ~1e-8 relative energy
        error; see :func:`~mofdft_jax.qchem.grids.build_grid_bundle`). Everything else stays
        float64.
    """
    import jax.numpy as jnp

    from mofdft_jax.config import ensure_x64

    ensure_x64()
    grid = None
    if grid_level is not None or grids is not None:
        import jax

        from mofdft_jax.qchem.grids import build_grid_bundle

        block_multiple, function_multiple = grid_padding
        grid = build_grid_bundle(mol, auxmol, 2 if grid_level is None else grid_level, grids=grids,
                                 block_multiple=block_multiple,
                                 function_multiple=function_multiple, dtype=grid_dtype)
        # in place on the CPU (64-byte aligned host arrays, qchem.grids.aligned_zeros): no copy of
        # the basis values, the largest array of a solve; a copy to the device elsewhere
        grid = jax.tree.map(lambda x: jax.device_put(np.ascontiguousarray(x), may_alias=True),
                            grid)

    def f64(x):
        return jnp.asarray(np.asarray(x, dtype=np.float64))

    return IntegralBundle(
        coulomb=_coulomb_operator(auxmol, coulomb),
        norm=f64(compute_aux_norm(auxmol)),
        v_ext=f64(compute_v_ext(mol, auxmol)),
        n_electrons=f64(mol.nelectron),
        e_nuc=f64(mol.energy_nuc()),
        atom_numbers=jnp.asarray(mol.atom_charges().astype(np.int64)),
        coords=f64(mol.atom_coords()),
        aux_atom=jnp.asarray(aux_function_atoms(auxmol)),
        aux_l=jnp.asarray(aux_function_l(auxmol)),
        grid=grid,
        hf_force=f64(compute_hf_force_integrals(mol, auxmol)) if with_forces else None,
        overlap=f64(auxmol.intor("int1e_ovlp")) if with_overlap else None,
    )
