"""Hellmann–Feynman forces (spec §4.6) against independent routes, for a fixed density.

The HF force on nucleus a is −∂E/∂R_a with the density ρ_p(r) held fixed *in space* (the basis
functions do not follow the nucleus): only the external energy and E_nn depend on R_a. The
finite-difference route therefore moves point charges, not basis functions, and recomputes
E_ext = −Σ_A Z_A ∫ρ_p/|r − R_A| with PySCF's 2-centre integrals against the displaced charges —
a route that never touches the ``int2c2e_ip1`` derivative integrals of the bundle.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from pyscf import gto

from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem import integrals
from mofdft_jax.qchem.basis import make_auxmol, make_mol
from mofdft_jax.qchem.guesses import minao_guess
from mofdft_jax.solver import hf_forces, nuclear_repulsion_forces

WATER_ANGSTROM = [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]]


@pytest.fixture(scope="module")
def water():
    # slightly distorted so no force component vanishes by symmetry
    coords = np.array(WATER_ANGSTROM) + np.array([[0.01, -0.02, 0.0], [0.0, 0.03, 0.01],
                                                   [-0.02, 0.0, 0.02]])
    mol = make_mol(Molecule.from_angstrom([8, 1, 1], coords, name="water"), "6-31G")
    auxmol = make_auxmol(mol)
    bundle = integrals.build_integral_bundle(mol, auxmol, grid_level=None, with_overlap=False)
    p = minao_guess(mol, auxmol).coeffs
    return mol, auxmol, bundle, p


def external_plus_nuclear_energy(p, coords, charges, auxmol):
    fake = gto.fakemol_for_charges(coords)
    e_ext = -(gto.intor_cross("int2c2e", auxmol, fake) @ charges) @ p
    diff = coords[:, None] - coords[None]
    dist = np.linalg.norm(diff, axis=-1) + np.eye(len(coords))
    e_nn = 0.5 * np.sum((np.outer(charges, charges) / dist)[~np.eye(len(coords), dtype=bool)])
    return e_ext + e_nn


def test_hf_forces_match_finite_differences_at_fixed_density(water):
    mol, auxmol, bundle, p = water
    forces = np.asarray(hf_forces(jnp.asarray(p), bundle))
    coords = mol.atom_coords()
    charges = mol.atom_charges().astype(float)
    h = 1e-4
    fd = np.zeros_like(coords)
    for a in range(mol.natm):
        for x in range(3):
            plus, minus = coords.copy(), coords.copy()
            plus[a, x] += h
            minus[a, x] -= h
            fd[a, x] = -(external_plus_nuclear_energy(p, plus, charges, auxmol)
                         - external_plus_nuclear_energy(p, minus, charges, auxmol)) / (2 * h)
    # central differences, h = 1e-4 Bohr: measured max deviation 2.4e-7 Ha/Bohr (forces ~0.1-1)
    print("max |F_HF - F_FD| =", np.abs(forces - fd).max())
    np.testing.assert_allclose(forces, fd, rtol=0, atol=1e-6)
    assert np.abs(forces).max() > 0.05  # not trivially zero


def test_hf_forces_match_host_route_and_pyscf_nuclear_gradient(water):
    mol, auxmol, bundle, p = water
    device = np.asarray(hf_forces(jnp.asarray(p), bundle))
    host = integrals.hf_forces(p, mol, auxmol, atoms_per_block=2)
    np.testing.assert_allclose(device, host, rtol=0, atol=1e-12)
    from pyscf.grad import rhf as rhf_grad

    np.testing.assert_allclose(np.asarray(nuclear_repulsion_forces(bundle)),
                               -rhf_grad.grad_nuc(mol), rtol=0, atol=1e-12)

