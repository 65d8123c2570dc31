"""Initial guesses (spec §4.3) and the cube-file writer."""

import numpy as np
import pytest

from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem import guesses
from mofdft_jax.qchem.basis import make_auxmol, make_mol
from mofdft_jax.qchem.cube import read_cube, write_density_cube
from mofdft_jax.qchem.fitting import fit_density
from mofdft_jax.qchem.integrals import compute_aux_norm

WATER_ANGSTROM = [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]]
METHANOL_ANGSTROM = [[-0.0467, 0.6630, 0.0], [-0.0467, -0.7568, 0.0], [-1.0916, 0.9752, 0.0],
                     [0.4374, 1.0862, 0.8875], [0.4374, 1.0862, -0.8875], [0.8714, -1.0723, 0.0]]


@pytest.fixture(scope="module")
def water():
    mol = make_mol(Molecule.from_angstrom([8, 1, 1], WATER_ANGSTROM, name="water"), "6-31G")
    return mol, make_auxmol(mol)


@pytest.fixture(scope="module")
def methanol():
    mol = make_mol(Molecule.from_angstrom([6, 8, 1, 1, 1, 1], METHANOL_ANGSTROM,
                                          name="methanol"), "6-31G")
    return mol, make_auxmol(mol)


@pytest.mark.parametrize("name", ["minao", "huckel", "fastminao"])
def test_guesses_hold_exactly_n_electrons(water, name):
    mol, auxmol = water
    guess = guesses.initial_guess(name, mol, auxmol)
    w = compute_aux_norm(auxmol)
    assert guess.coeffs.shape == (auxmol.nao_nr(),)
    assert abs(w @ guess.coeffs - mol.nelectron) < 1e-12
    # the raw fit already nearly conserves the count (spec §1.5: ~1e-4 relative for MINAO)
    assert abs(guess.fitted_electrons - mol.nelectron) < 0.05


def test_minao_guess_is_the_charge_constrained_coulomb_fit(water):
    """min (p − p_C)ᵀW̃(p − p_C) s.t. wᵀp = N, solved here as a KKT system."""
    from pyscf.scf import hf

    mol, auxmol = water
    guess = guesses.minao_guess(mol, auxmol)
    p_c = fit_density(hf.init_guess_by_minao(mol), mol, auxmol, kind="coulomb")
    coulomb, w = auxmol.intor("int2c2e"), compute_aux_norm(auxmol)
    kkt = np.block([[coulomb, w[:, None]], [w[None, :], np.zeros((1, 1))]])
    expected = np.linalg.solve(kkt, np.r_[coulomb @ p_c, mol.nelectron])[:-1]
    np.testing.assert_allclose(guess.coeffs, expected, rtol=0, atol=1e-7)


def test_fastminao_is_a_superposition_of_cached_atoms(methanol):
    mol, auxmol = methanol
    guesses._ATOM_CACHE.clear()
    fast = guesses.fastminao_guess(mol, auxmol)
    assert len(guesses._ATOM_CACHE) == 3  # C, O, H: one fit per element, not per atom
    raw = np.concatenate([guesses.atomic_minao_coeffs(mol.atom_symbol(a),
                                                      mol._basis[mol.atom_symbol(a)],
                                                      auxmol._basis[mol.atom_symbol(a)])
                          for a in range(mol.natm)])
    w = compute_aux_norm(auxmol)
    np.testing.assert_allclose(fast.coeffs, raw + w * (mol.nelectron - w @ raw) / (w @ w),
                               atol=1e-14)
    # each isolated atom carries its own electron count
    for a in range(mol.natm):
        sym = mol.atom_symbol(a)
        sl = slice(*auxmol.aoslice_by_atom()[a][2:])
        assert abs(w[sl] @ raw[sl] - mol.atom_charge(a)) < 0.05


def test_fastminao_close_to_molecular_minao(methanol):
    """The molecular MINAO guess projects the same atomic densities into the whole basis: the two
    densities differ by a small fraction of their Coulomb self-energy."""
    mol, auxmol = methanol
    fast = guesses.fastminao_guess(mol, auxmol).coeffs
    full = guesses.minao_guess(mol, auxmol).coeffs
    coulomb = auxmol.intor("int2c2e")
    delta = fast - full
    ratio = (delta @ coulomb @ delta) / (full @ coulomb @ full)
    print(f"methanol fastminao vs minao: |Δρ|²_C / |ρ|²_C = {ratio:.2e}")
    assert ratio < 1e-4


def test_unknown_guess_and_registration(water):
    mol, auxmol = water
    with pytest.raises(ValueError, match="unknown initial guess"):
        guesses.initial_guess("superposition-of-fragments", mol, auxmol)

    def doubled(mol, auxmol, **_):
        g = guesses.minao_guess(mol, auxmol)
        return guesses.InitialGuess(coeffs=g.coeffs, name="test-only", fitted_electrons=10.0,
                                    wall_s=0.0)

    guesses.register_initial_guess("test-only", doubled)
    try:
        assert guesses.initial_guess("test-only", mol, auxmol).name == "test-only"
    finally:
        del guesses.INITIAL_GUESSES["test-only"]


def test_cube_file_round_trip_integrates_to_n(water, tmp_path):
    mol, auxmol = water
    p = guesses.minao_guess(mol, auxmol).coeffs
    path = tmp_path / "water.cube"
    field = write_density_cube(path, p, mol, auxmol, nx=60, ny=60, nz=60, block=5000)
    cube = read_cube(path)
    assert cube.field.shape == (60, 60, 60)
    np.testing.assert_array_equal(cube.atom_numbers, [8, 1, 1])
    np.testing.assert_allclose(cube.coords, mol.atom_coords(), atol=1e-6)
    np.testing.assert_allclose(cube.field, field, rtol=1e-5, atol=1e-10)  # 6 significant digits
    # a uniform grid integrates the fitted density to N within the loose cusp error (measured
    # 9.91 at 60³, 9.94 at 80³, with 3 Bohr margins)
    n = cube.integrate()
    print(f"cube integral {n:.4f} (N = {mol.nelectron})")
    assert abs(n - mol.nelectron) < 0.2
    # the box is PySCF's cubegen box: atoms inside with a 3 Bohr margin
    assert np.all(cube.origin < mol.atom_coords().min(axis=0) - 2.99)
