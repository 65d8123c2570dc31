"""Readers and writers: exact round trips, unit conversions at the file boundary, real formats."""

from pathlib import Path

import numpy as np
import pytest

from mofdft_jax.molecules import (
    InputError,
    Molecule,
    read_md17_npz,
    read_molecules,
    read_pdb,
    read_qm9_xyz,
    read_xyz,
    write_xyz,
)
from mofdft_jax.units import ANGSTROM_TO_BOHR, HARTREE_TO_KCAL

DATA = Path(__file__).resolve().parents[1] / "data" / "molecules"

WATER_ANGSTROM = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])


def _water(name="water", **kw):
    return Molecule.from_angstrom([8, 1, 1], WATER_ANGSTROM, name=name, **kw)


def test_xyz_round_trip_multi_frame_is_exact(tmp_path, rng):
    """write_xyz -> read_xyz reproduces coordinates to 1e-10 Angstrom, names, charge, spin and
    energy."""
    frames = []
    for k in range(4):
        coords = WATER_ANGSTROM + 0.05 * rng.standard_normal((3, 3))
        frames.append(Molecule.from_angstrom([8, 1, 1], coords, name=f"water-{k}",
                                             energy_ref=-76.4 - 1e-3 * k))
    ion = Molecule.from_angstrom([8, 1, 1, 1], np.vstack([WATER_ANGSTROM, [[0.9, 0.0, 0.5]]]),
                                 charge=1, name="hydronium")
    path = write_xyz(tmp_path / "traj.xyz", frames + [ion])
    back = read_xyz(path, allow_charged=True)
    assert [m.name for m in back] == [m.name for m in frames] + ["hydronium"]
    for a, b in zip(frames + [ion], back, strict=True):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        assert np.abs(a.coords_angstrom - b.coords_angstrom).max() < 1e-10
        assert (a.charge, a.spin, a.energy_ref) == (b.charge, b.spin, b.energy_ref)


def test_xyz_is_read_in_angstrom_and_stored_in_bohr(tmp_path):
    """A hand-written xyz (atomic numbers as symbols, extra columns) gives Bohr = A * 1.8897."""
    (tmp_path / "h2.xyz").write_text("2\n\n1 0.0 0.0 0.0 extra\nH 0.0 0.0 0.74 0.1 0.2\n")
    (mol,) = read_xyz(tmp_path / "h2.xyz")
    assert mol.name == "h2"
    np.testing.assert_allclose(np.linalg.norm(mol.coords_bohr[1] - mol.coords_bohr[0]),
                               0.74 * ANGSTROM_TO_BOHR, rtol=1e-15)
    assert abs(0.74 * ANGSTROM_TO_BOHR - 1.3984) < 1e-4  # 1 A = 1.8897 Bohr


def test_qm9_record_parsing():
    """The QM9 methane record: Mathematica '*^' exponents, Mulliken column, properties, SMILES.

    The fixture is QM9 record 1 (dsgdb9nsd_000001.xyz) in the dataset's exact layout (tabs, trailing
    tab on line 2, frequencies/SMILES/InChI lines); two z coordinates are written with '*^'
    exponents as Mathematica exports them elsewhere in QM9. The B3LYP geometry is a perfect
    tetrahedron: C-H = 1.0919 A and H-C-H = 109.47 degrees.
    """
    rec = read_qm9_xyz(DATA / "dsgdb9nsd_000001.xyz")
    mol = rec.molecule
    assert mol.name == "qm9_000001" and rec.index == 1 and mol.formula == "CH4"
    assert mol.energy_ref is None  # QM9 energies are B3LYP, not PBE references
    d = np.linalg.norm(mol.coords_angstrom[1:] - mol.coords_angstrom[0], axis=1)
    np.testing.assert_allclose(d, 1.09195, atol=2e-5)
    v = mol.coords_angstrom[1:] - mol.coords_angstrom[0]
    cos = (v @ v.T)[np.triu_indices(4, 1)] / np.outer(d, d)[np.triu_indices(4, 1)]
    np.testing.assert_allclose(np.degrees(np.arccos(cos)), 109.4712, atol=5e-3)
    assert mol.coords_angstrom[1, 2] == pytest.approx(1.9761204e-3, abs=1e-14)
    assert rec.properties["u0_ha"] == -40.47893 and rec.properties["gap_ha"] == 0.5048
    assert rec.properties["a_ghz"] == 157.7118 and rec.properties["cv_cal_molk"] == 6.469
    np.testing.assert_allclose(rec.mulliken_charges.sum(), 0.0, atol=1e-5)
    assert len(rec.frequencies_cm) == 3 * 5 - 6
    assert (rec.smiles_gdb, rec.inchi_relaxed) == ("C", "InChI=1S/CH4/h1H4")
    # read_xyz and the dispatcher recognise a QM9 file by its 'gdb' line
    (same,) = read_molecules(DATA / "dsgdb9nsd_000001.xyz")
    np.testing.assert_array_equal(same.coords_bohr, mol.coords_bohr)


def test_md17_npz_units(tmp_path):
    """MD17 E (kcal/mol) -> Hartree and F (kcal/mol/A) -> Ha/Bohr; R (A) -> Bohr."""
    nframe = 3
    r = np.stack([WATER_ANGSTROM * (1 + 0.01 * k) for k in range(nframe)])
    e = np.array([[-47_900.0], [-47_899.5], [-47_899.0]])  # kcal/mol, (nframe, 1) as in sGDML files
    f = np.zeros((nframe, 3, 3))
    f[:, 1, 2] = 1185.8210418  # ~ 1 Ha/Bohr in kcal/mol/A
    np.savez(tmp_path / "md17_water.npz", R=r, z=np.array([8, 1, 1]), E=e, F=f)
    mols = read_md17_npz(tmp_path / "md17_water.npz")
    assert [m.name for m in mols] == ["md17_water-0", "md17_water-1", "md17_water-2"]
    assert mols[0].energy_ref == pytest.approx(-47_900.0 / HARTREE_TO_KCAL, rel=1e-15)
    assert mols[0].energy_ref == pytest.approx(-76.3336, abs=1e-4)
    np.testing.assert_allclose(mols[2].forces_ref[1, 2], 1.0, rtol=1e-8)
    np.testing.assert_allclose(mols[1].coords_bohr, r[1] * ANGSTROM_TO_BOHR, rtol=1e-15)
    # rMD17 key names, integer indices, (nframe,) energies
    np.savez(tmp_path / "rmd17.npz", coords=r, nuclear_charges=np.array([8, 1, 1]),
             energies=e[:, 0], forces=f)
    (one,) = read_md17_npz(tmp_path / "rmd17.npz", indices=[2])
    assert one.name == "rmd17-2" and one.energy_ref == pytest.approx(-47_899.0 / HARTREE_TO_KCAL)


def test_read_molecules_dispatch(tmp_path):
    """smiles: prefix, .xyz, .smi, .npz are routed to the right reader."""
    (ethanol,) = read_molecules("smiles:CCO")
    assert ethanol.formula == "C2H6O" and ethanol.name == "CCO"
    write_xyz(tmp_path / "w.xyz", [_water("a"), _water("b")])
    assert [m.name for m in read_molecules(tmp_path / "w.xyz")] == ["a", "b"]
    (tmp_path / "set.smi").write_text("# two molecules\nC methane\nO=C=O\n")
    mols = read_molecules(tmp_path / "set.smi")
    assert [(m.name, m.formula) for m in mols] == [("methane", "CH4"), ("set-3", "CO2")]
    np.savez(tmp_path / "f.npz", R=WATER_ANGSTROM[None], z=np.array([8, 1, 1]))
    (w,) = read_molecules(tmp_path / "f.npz")
    assert w.energy_ref is None and w.forces_ref is None


def test_read_pdb_keeps_hydrogens_and_counts_protonation_charge(tmp_path):
    """A protein PDB with hydrogens reads as is; a charged protonation state is detected from the
    hydrogen count (not computed as a neutral radical), and a heavy-atom-only file is refused."""
    from mofdft_jax.molecules import build_protein

    pdb = tmp_path / "gd.pdb"
    built = build_protein("GDK", name="GDK", pdb_out=pdb)
    mol = read_pdb(pdb)
    assert mol.natm == built.natm and mol.charge == 0
    np.testing.assert_allclose(mol.coords_bohr, built.coords_bohr, atol=1e-3 * ANGSTROM_TO_BOHR)
    lines = pdb.read_text().splitlines()
    # remove the carboxylic acid hydrogens HXT and HD2 of Asp: a -2 charged form, even electrons
    charged = [ln for ln in lines if ln[12:16].strip() != "HXT"
               and not (ln[17:20] == "ASP" and ln[12:16].strip() == "HD2")]
    (tmp_path / "charged.pdb").write_text("\n".join(charged) + "\n")
    with pytest.raises(InputError, match=r"charged\.pdb: total charge -2"):
        read_pdb(tmp_path / "charged.pdb")
    heavy = [ln for ln in lines
             if not (ln.startswith(("ATOM", "HETATM")) and ln[76:78].strip() == "H")]
    (tmp_path / "heavy.pdb").write_text("\n".join(heavy) + "\n")
    with pytest.raises(InputError, match=r"heavy\.pdb: no hydrogen atoms"):
        read_pdb(tmp_path / "heavy.pdb")
    rebuilt = read_pdb(tmp_path / "heavy.pdb", add_hydrogens=True)
    assert rebuilt.formula == built.formula and rebuilt.charge == 0
