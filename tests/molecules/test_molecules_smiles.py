"""SMILES -> 3D: composition, closed shell, seeded determinism, MMFF94 bond lengths."""

import numpy as np
import pytest

from mofdft_jax.molecules import molecule_from_smiles, optimize_mmff
from mofdft_jax.molecules.geometry import bond_pairs


@pytest.mark.parametrize(
    ("smiles", "formula", "n_electrons"),
    [("CCO", "C2H6O", 26), ("O", "H2O", 10), ("c1ccccc1", "C6H6", 42), ("FC(F)F", "CHF3", 34),
     ("NC(=O)C", "C2H5NO", 32), ("OCc1cccnc1C", "C7H9NO", 66)],
)
def test_formula_and_closed_shell(smiles, formula, n_electrons):
    mol = molecule_from_smiles(smiles, seed=3)
    assert mol.formula == formula
    assert mol.charge == 0 and mol.spin == 0 and mol.n_electrons == n_electrons
    assert mol.name == smiles


def test_same_seed_same_coordinates_other_seed_other_conformer():
    a = molecule_from_smiles("CCCCO", seed=7, name="butanol")
    b = molecule_from_smiles("CCCCO", seed=7, name="butanol")
    c = molecule_from_smiles("CCCCO", seed=8, name="butanol")
    np.testing.assert_array_equal(a.coords_bohr, b.coords_bohr)
    assert np.abs(a.coords_bohr - c.coords_bohr).max() > 0.1


def test_mmff_geometry_of_ethanol():
    """MMFF94 minimum of ethanol: C-C 1.51, C-O 1.42, O-H 0.97, C-H 1.09-1.10 Angstrom."""
    mol = molecule_from_smiles("CCO", seed=0)
    x = mol.coords_angstrom
    lengths = {}
    for i, j in bond_pairs(mol.numbers, x):
        key = "-".join(sorted((mol.symbols[i], mol.symbols[j])))
        lengths.setdefault(key, []).append(np.linalg.norm(x[i] - x[j]))
    assert lengths.keys() == {"C-C", "C-O", "C-H", "H-O"}
    assert lengths["C-C"][0] == pytest.approx(1.51, abs=0.015)
    assert lengths["C-O"][0] == pytest.approx(1.42, abs=0.015)
    assert lengths["H-O"][0] == pytest.approx(0.97, abs=0.01)
    assert all(1.08 < d < 1.11 for d in lengths["C-H"]) and len(lengths["C-H"]) == 5
    # the geometry is already an MMFF minimum: re-optimising moves atoms by < 1e-3 A
    again = optimize_mmff(mol)
    assert np.abs(again.coords_angstrom - x).max() < 1e-3
