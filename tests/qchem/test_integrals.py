"""Integrals of the density basis (spec §4.1, §4.6) against quadrature and finite differences."""

import numpy as np
import pytest
from pyscf import dft, gto
from pyscf.grad import rhf as rhf_grad

from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem.basis import make_auxmol, make_mol
from mofdft_jax.qchem.integrals import (build_integral_bundle, compute_aux_norm,
                                        compute_hf_force_integrals, compute_nuclear_forces,
                                        compute_v_ext, hf_forces)

WATER = Molecule.from_angstrom([8, 1, 1], [[0, 0, 0.05], [0, 0.757, 0.587], [0.1, -0.757, 0.587]],
                               name="water")


@pytest.fixture(scope="module")
def water():
    mol = make_mol(WATER, "6-31G")
    auxmol = make_auxmol(mol)
    grids = dft.gen_grid.Grids(mol)
    grids.level = 5
    grids.build()
    ao = auxmol.eval_gto("GTOval_sph", grids.coords)
    return mol, auxmol, grids, ao


def test_norm_vector_matches_quadrature(water):
    mol, auxmol, grids, ao = water
    w = compute_aux_norm(auxmol)
    w_quad = grids.weights @ ao
    # tight s functions (exponents up to 5e3) limit the quadrature to ~1e-6
    np.testing.assert_allclose(w, w_quad, atol=2e-6 * np.abs(w).max())
    l = np.concatenate([[auxmol.bas_angular(b)] * (2 * auxmol.bas_angular(b) + 1)
                        for b in range(auxmol.nbas)])
    assert np.all(w[l > 0] == 0.0) and np.all(w[l == 0] > 0.0)


def test_v_ext_matches_quadrature(water):
    mol, auxmol, grids, ao = water
    v = compute_v_ext(mol, auxmol)
    v_quad = np.zeros_like(v)
    for z, r in zip(mol.atom_charges(), mol.atom_coords()):
        v_quad -= z * (grids.weights / np.linalg.norm(grids.coords - r, axis=1)) @ ao
    np.testing.assert_allclose(v, v_quad, atol=2e-6 * np.abs(v).max())


def test_hf_force_integrals_match_quadrature(water):
    mol, auxmol, grids, ao = water
    force = compute_hf_force_integrals(mol, auxmol)
    for a, (z, r) in enumerate(zip(mol.atom_charges(), mol.atom_coords())):
        d = grids.coords - r
        dist = np.linalg.norm(d, axis=1)
        quad = z * np.einsum("g,gx,gn->xn", grids.weights / dist**3, d, ao)
        np.testing.assert_allclose(force[a], quad, atol=5e-6 * np.abs(force).max())


def test_hf_force_is_minus_derivative_of_external_energy(water, rng):
    """F_a·p = -∂E_ext/∂R_a at fixed p, by central differences of the int2c2e route."""
    mol, auxmol, _, _ = water
    p = rng.normal(size=auxmol.nao_nr()) * 0.05
    z = mol.atom_charges().astype(float)
    coords = mol.atom_coords()

    def e_ext(c):
        return -(gto.intor_cross("int2c2e", auxmol, gto.fakemol_for_charges(c)) @ z) @ p

    h = 1e-4
    fd = np.zeros((mol.natm, 3))
    for a in range(mol.natm):
        for x in range(3):
            cp, cm = coords.copy(), coords.copy()
            cp[a, x] += h
            cm[a, x] -= h
            fd[a, x] = -(e_ext(cp) - e_ext(cm)) / (2 * h)
    analytic = compute_hf_force_integrals(mol, auxmol) @ p
    np.testing.assert_allclose(analytic, fd, atol=1e-6 * np.abs(analytic).max())


def test_nuclear_forces_match_coulomb_law_and_pyscf(water):
    mol = water[0]
    z, r = mol.atom_charges().astype(float), mol.atom_coords()
    ref = np.zeros((mol.natm, 3))
    for a in range(mol.natm):
        for b in range(mol.natm):
            if a != b:
                d = r[a] - r[b]
                ref[a] += z[a] * z[b] * d / np.linalg.norm(d) ** 3
    np.testing.assert_allclose(compute_nuclear_forces(mol), ref, atol=1e-12)
    np.testing.assert_allclose(compute_nuclear_forces(mol), -rhf_grad.grad_nuc(mol), atol=1e-12)


def test_blocked_hf_forces_equal_bundle_route(water, rng):
    mol, auxmol, _, _ = water
    p = rng.normal(size=auxmol.nao_nr())
    bundle = build_integral_bundle(mol, auxmol, grid_level=None)
    full = np.asarray(bundle.hf_force) @ p + compute_nuclear_forces(mol)
    np.testing.assert_allclose(hf_forces(p, mol, auxmol, atoms_per_block=2), full, atol=1e-10)


def test_bundle_constants(water):
    mol, auxmol, _, _ = water
    bundle = build_integral_bundle(mol, auxmol, grid_level=None)
    w2 = np.asarray(bundle.coulomb)
    assert bundle.coulomb.dtype == np.float64
    np.testing.assert_allclose(w2, w2.T, atol=1e-12)
    assert np.linalg.eigvalsh(w2).min() > 0
    assert float(bundle.e_nuc) == pytest.approx(mol.energy_nuc(), abs=1e-12)
    assert float(bundle.n_electrons) == mol.nelectron
    np.testing.assert_allclose(np.asarray(bundle.overlap), auxmol.intor("int1e_ovlp"))
    assert bundle.grid is None


def test_bundle_with_grid_integrates_basis(water):
    """Grid from qchem.grids: Σ_g w_g ω_μ(r_g) reproduces the analytic w (level 3)."""
    mol, auxmol, _, _ = water
    bundle = build_integral_bundle(mol, auxmol, grid_level=3, with_forces=False,
                                   with_overlap=False)
    grid = bundle.grid
    w_grid = np.zeros(auxmol.nao_nr())
    ao = np.asarray(grid.ao)[:, 0]  # (nblk, blk, nsig)
    np.add.at(w_grid, np.asarray(grid.idx), np.einsum("bg,bgs->bs", np.asarray(grid.weights), ao))
    np.testing.assert_allclose(w_grid, np.asarray(bundle.norm),
                               atol=5e-5 * np.abs(w_grid).max())


def test_hf_force_of_density_matrix_by_ao_route_matches_quadrature(water):
    """AO route (int1e_iprinv) vs quadrature of Z_a ∫ρ_Γ (r - R_a)/|r - R_a|³ for the MINAO Γ."""
    from pyscf import scf

    from mofdft_jax.qchem.forces import hf_forces_of_density_matrix

    mol, _, grids, _ = water
    dm = scf.RHF(mol).get_init_guess(key="minao")
    rho = dft.numint.eval_rho(mol, dft.numint.eval_ao(mol, grids.coords), dm)
    ref = compute_nuclear_forces(mol)
    for a, (z, r) in enumerate(zip(mol.atom_charges(), mol.atom_coords())):
        d = grids.coords - r
        ref[a] += z * np.einsum("g,gx->x", grids.weights * rho / np.linalg.norm(d, axis=1) ** 3, d)
    np.testing.assert_allclose(hf_forces_of_density_matrix(mol, dm), ref, atol=2e-3)
