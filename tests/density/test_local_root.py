"""Local square root of the density-basis overlap (large-system natural reparametrisation).

* exact (to rounding) when every neighbourhood covers the molecule;
* converges to the full symmetric root W^{1/2} as the radius grows (Gly₄, 31 atoms, MINAO density
  from sto-3g orbitals: relative error of Ŝp 5.5e-3 → 6.6e-4 → 1.2e-4 at 4, 6, 8 Bohr);
* its inverse (conjugate gradients on Ŝ) is the exact inverse of the forward map, and the adapter
  option ``overlap_root`` uses it consistently: transform ∘ untransform = identity,
  and gradients through the adapter match finite differences;
* the PySCF neighbourhood blocks (``qchem.coulomb_blocks``) equal the dense overlap's blocks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mofdft_jax.density.adapter import (
    build_adapter_geometry,
    transform_coeffs,
    transform_gradient,
    untransform_coeffs,
)
from mofdft_jax.density.local_root import (
    block_rows_to_dense,
    hydrogen_groups,
    local_overlap_root_from_dense,
    solve_local_root,
)
from mofdft_jax.qchem.basis import aux_function_atoms, make_auxmol, make_mol
from mofdft_jax.qchem.guesses import fastminao_guess


@pytest.fixture(scope="module")
def gly4():
    from mofdft_jax.molecules.peptides import peptide_molecule

    mol = make_mol(peptide_molecule("GGGG"), "sto-3g")
    auxmol = make_auxmol(mol)
    overlap = auxmol.intor("int1e_ovlp")
    vals, vecs = np.linalg.eigh(overlap)
    root = (vecs * np.sqrt(vals)) @ vecs.T
    coeffs = fastminao_guess(mol, auxmol).coeffs
    return mol, auxmol, overlap, root, coeffs


def _local(gly4, radius, **kw):
    mol, auxmol, overlap, _, _ = gly4
    return local_overlap_root_from_dense(overlap, aux_function_atoms(auxmol), mol.atom_coords(),
                                         radius=radius, atom_numbers=mol.atom_charges(), **kw)


def test_local_root_exact_when_neighbourhood_covers_molecule():
    from mofdft_jax.molecules.smiles import molecule_from_smiles

    mol = make_mol(molecule_from_smiles("CCO"), "sto-3g")
    auxmol = make_auxmol(mol)
    overlap = auxmol.intor("int1e_ovlp")
    vals, vecs = np.linalg.eigh(overlap)
    coeffs = fastminao_guess(mol, auxmol).coeffs
    ref = (vecs * np.sqrt(vals)) @ vecs.T @ coeffs
    local = local_overlap_root_from_dense(overlap, aux_function_atoms(auxmol), mol.atom_coords(),
                                          radius=100.0, atom_numbers=mol.atom_charges(),
                                          as_jax=False)
    got = block_rows_to_dense(local.sqrt) @ coeffs
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_local_root_converges_with_radius(gly4):
    _, _, _, root, coeffs = gly4
    ref = root @ coeffs
    errors = []
    for radius in (4.0, 6.0, 8.0):
        local = _local(gly4, radius=radius, as_jax=False)
        sqrt = block_rows_to_dense(local.sqrt)
        assert np.abs(sqrt - sqrt.T).max() < 1e-14
        errors.append(np.linalg.norm(sqrt @ coeffs - ref) / np.linalg.norm(ref))
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 1.5e-3 and errors[2] < 3e-4, errors


def test_local_root_inverse_is_exact_and_adapter_consistent(gly4):
    mol, auxmol, overlap, _, coeffs = gly4
    local = _local(gly4, radius=6.0)

    class Bundle:
        atom_numbers = mol.atom_charges()
        coords = mol.atom_coords()
        aux_atom = aux_function_atoms(auxmol)
        aux_l = np.concatenate([[auxmol.bas_angular(b)] * (2 * auxmol.bas_angular(b) + 1)
                                for b in range(auxmol.nbas)])
        overlap = None  # never needed with a pre-built local root

    geometry = build_adapter_geometry(Bundle, overlap_root=local)
    assert geometry.overlap_vecs is None and geometry.overlap_root is not None
    rng = np.random.default_rng(3)
    g = jnp.asarray(rng.normal(size=coeffs.shape))
    dp = jnp.asarray(rng.normal(size=coeffs.shape))

    @jax.jit
    def maps(p, g, dp, geometry):
        back = solve_local_root(geometry.overlap_root, geometry.overlap_root.sqrt.matvec(p))
        roundtrip = untransform_coeffs(transform_coeffs(p, geometry), geometry)
        # a gradient maps with the inverse transpose: <∇_p, dp> = <∇_{p'}, dp'>
        pairing = transform_gradient(g, geometry) @ transform_coeffs(dp, geometry)
        return back, roundtrip, pairing

    back, roundtrip, pairing = maps(jnp.asarray(coeffs), g, dp, geometry)
    assert np.linalg.norm(np.asarray(back) - coeffs) <= 1e-10 * np.linalg.norm(coeffs)
    assert np.linalg.norm(np.asarray(roundtrip) - coeffs) <= 1e-10 * np.linalg.norm(coeffs)
    lhs = float(g @ dp)
    assert abs(lhs - float(pairing)) <= 1e-9 * abs(lhs)


def test_pyscf_neighbourhood_blocks_match_dense_overlap(gly4):
    from mofdft_jax.qchem.coulomb_blocks import build_local_overlap_root

    _, auxmol, _, _, _ = gly4
    ref = block_rows_to_dense(_local(gly4, radius=5.0, as_jax=False).sqrt)
    got = block_rows_to_dense(build_local_overlap_root(auxmol, radius=5.0, as_jax=False).sqrt)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)


def test_hydrogen_groups_cover_every_atom_once(gly4):
    mol = gly4[0]
    groups = hydrogen_groups(mol.atom_charges(), mol.atom_coords())
    flat = np.sort(np.concatenate(groups))
    np.testing.assert_array_equal(flat, np.arange(mol.natm))
    assert all((mol.atom_charges()[g] > 1).sum() == 1 for g in groups)
