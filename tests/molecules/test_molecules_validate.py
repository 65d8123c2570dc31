"""Every bad input gets one clear InputError line naming the file, line or atom (issue 4)."""

import numpy as np
import pytest

from mofdft_jax.molecules import (
    InputError,
    Molecule,
    molecule_from_smiles,
    read_md17_npz,
    read_molecules,
    read_pdb,
    read_qm9_xyz,
    read_xyz,
    validate_molecule,
)

WATER = "3\nwater\nO 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"


def _error(func, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "an InputError is one line"
    return message


def _xyz(tmp_path, text, name="bad.xyz"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_water_passes(tmp_path):
    (mol,) = read_xyz(_xyz(tmp_path, WATER, "water.xyz"))
    assert validate_molecule(mol) is mol and mol.n_electrons == 10


def test_unsupported_element_names_file_line_atom(tmp_path):
    text = "3\nHOCl\nO 0 0 0\nH 0 0 0.96\nCl 1.7 0 -0.2\n"
    msg = _error(read_xyz, _xyz(tmp_path, text))
    assert "bad.xyz" in msg and "atom 2 (Cl, line 5)" in msg and "H, C, N, O, F only" in msg


def test_charged_needs_flag(tmp_path):
    text = "4\nhydronium charge=1\nO 0 0 0\nH 0 0.95 0.3\nH 0.82 -0.47 0.3\nH -0.82 -0.47 0.3\n"
    msg = _error(read_xyz, _xyz(tmp_path, text))
    assert "bad.xyz" in msg and "total charge +1" in msg and "allow_charged" in msg
    (mol,) = read_xyz(tmp_path / "bad.xyz", allow_charged=True)
    assert mol.charge == 1 and mol.n_electrons == 10
    msg = _error(molecule_from_smiles, "[NH4+]")
    assert "SMILES '[NH4+]'" in msg and "total charge +1" in msg


def test_open_shell_needs_flag(tmp_path):
    text = "4\nmethyl\nC 0 0 0\nH 1.08 0 0\nH -0.54 0.935 0\nH -0.54 -0.935 0\n"
    msg = _error(read_xyz, _xyz(tmp_path, text))
    assert "bad.xyz" in msg and "9 electrons (odd)" in msg and "allow_open_shell" in msg
    msg = _error(molecule_from_smiles, "[CH3]")
    assert "open shell" in msg and "9 electrons" in msg
    triplet = Molecule([8, 8], [[0, 0, 0], [0, 0, 2.28]], spin=2, name="O2")
    assert "spin 2S=2" in _error(validate_molecule, triplet)
    assert validate_molecule(triplet, allow_open_shell=True) is triplet
    impossible = Molecule([8, 8], [[0, 0, 0], [0, 0, 2.28]], spin=1, name="O2")
    assert "impossible with 16 electrons" in _error(validate_molecule, impossible,
                                                   allow_open_shell=True)


def test_close_atoms_name_both(tmp_path):
    text = "3\nwater\nO 0.0 0.0 0.0\nH 0.0 0.3 0.0\nH 0.0 -0.7572 -0.4692\n"
    msg = _error(read_xyz, _xyz(tmp_path, text))
    assert "atom 0 (O, line 3) and atom 1 (H, line 4) are 0.300 Angstrom apart" in msg
    frames = WATER + "3\nw2\nO 0 0 0\nH 0 0.1 0\nH 0.9 0 0\n"
    msg = _error(read_xyz, _xyz(tmp_path, frames, "two.xyz"))
    assert "two.xyz frame 1" in msg and "atom 0 (O, line 8) and atom 1 (H, line 9)" in msg


def test_non_finite_coordinates(tmp_path):
    text = WATER.replace("H 0.0 0.7572 -0.4692", "H nan 0.7572 -0.4692")
    msg = _error(read_xyz, _xyz(tmp_path, text))
    assert "atom 1 (H, line 4) has a non-finite coordinate (nan, 0.7572, -0.4692)" in msg
    mol = Molecule([1, 1], [[0, 0, 0], [np.inf, 0, 0]], name="h2")
    assert "h2: atom 1 (H) has a non-finite coordinate" in _error(validate_molecule, mol)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "bad.xyz: file is empty"),
        ("\n  \n", "bad.xyz: file is empty"),
        ("three\nwater\n", "bad.xyz line 1: expected the number of atoms of a frame, got 'three'"),
        ("3\nwater\nO 0 0 0\nH 0 0 1\n", "bad.xyz line 1: frame promises 3 atoms but the file "
                                         "ends after 2 atom line(s)"),
        ("2\nh2\nH 0 0 0\nH 0 0\n", "bad.xyz line 4: expected 'symbol x y z', got 'H 0 0'"),
        ("2\nh2\nH 0 0 0\nH 0 0 zero\n",
         "bad.xyz line 4: cannot read coordinates from 'H 0 0 zero'"),
        ("2\nh2\nH 0 0 0\nXq 0 0 0.7\n", "bad.xyz line 4: unknown element symbol 'Xq'"),
        ("0\nnothing\n", "bad.xyz line 1: a frame must have at least one atom, got 0"),
        (WATER + "\n2\nh2\nH 0 0 0\n", "bad.xyz line 7: frame promises 2 atoms"),
        ("1\nH charge=one\nH 0 0 0\n", "bad.xyz line 2: cannot read 'charge=one'"),
    ],
)
def test_malformed_xyz(tmp_path, text, expected):
    assert expected in _error(read_xyz, _xyz(tmp_path, text))


def test_missing_file_unknown_type_and_smiles_hint(tmp_path):
    assert "nope.xyz: no such file" in _error(read_molecules, tmp_path / "nope.xyz")
    assert "(for a SMILES string write smiles:CCO)" in _error(read_molecules, "CCO")
    (tmp_path / "mol.mol2").write_text("x")
    assert "unsupported file type '.mol2'" in _error(read_molecules, tmp_path / "mol.mol2")
    assert "RDKit cannot parse this SMILES" in _error(read_molecules, "smiles:C1CC")


def test_malformed_qm9(tmp_path):
    from pathlib import Path

    good = (Path(__file__).resolve().parents[1] / "data" / "molecules" /
            "dsgdb9nsd_000001.xyz").read_text().splitlines()
    bad = list(good)
    bad[4] = "H\t1.0\t2.0\t3.0"  # Mulliken column missing
    path = _xyz(tmp_path, "\n".join(bad) + "\n", "q.xyz")
    assert "q.xyz line 5: expected 'symbol x y z mulliken_charge'" in _error(read_qm9_xyz, path)
    path = _xyz(tmp_path, "\n".join(good[:6]) + "\n", "short.xyz")
    assert "short.xyz: a QM9 record with 5 atoms has 10 lines, the file has 6" in _error(
        read_qm9_xyz, path)


def test_malformed_pdb(tmp_path):
    line = "ATOM      1  N   GLY A   1       0.887  -1.076   1.640  1.00  0.00           N  "
    bad = line[:30] + "   x.xxx" + line[38:]
    (tmp_path / "p.pdb").write_text("REMARK test\n" + bad + "\n")
    assert "p.pdb line 2: cannot read coordinates from columns 31-54" in _error(
        read_pdb, tmp_path / "p.pdb")
    (tmp_path / "empty.pdb").write_text("REMARK nothing here\nEND\n")
    assert "empty.pdb: no ATOM or HETATM records" in _error(read_pdb, tmp_path / "empty.pdb")
    s_line = line.replace(" N   GLY", " SG  CYS").replace("N  \n", "S  ")[:76] + " S"
    h_line = ("ATOM      2  HG  CYS A   1       1.887  -1.076   1.640  1.00  0.00           H")
    (tmp_path / "s.pdb").write_text(s_line + "\n" + h_line + "\n")
    msg = _error(read_pdb, tmp_path / "s.pdb")
    assert "s.pdb: atom 0 (S, line 1) is element Z=16" in msg


def test_malformed_npz(tmp_path):
    np.savez(tmp_path / "x.npz", coords_wrong=np.zeros((1, 2, 3)))
    assert "x.npz: an MD17 file needs arrays 'R' and 'z'" in _error(read_md17_npz,
                                                                    tmp_path / "x.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "junk.npz: not a readable .npz archive" in _error(read_md17_npz, tmp_path / "junk.npz")
    r = np.zeros((3, 2, 3))
    r[:, 1, 2] = [0.74, 0.74, 0.2]  # frame 2 collapses
    np.savez(tmp_path / "h2.npz", R=r, z=np.array([1, 1]))
    msg = _error(read_md17_npz, tmp_path / "h2.npz")
    assert "h2.npz frame 2: atom 0 (H) and atom 1 (H) are 0.200 Angstrom apart" in msg
    assert len(read_md17_npz(tmp_path / "h2.npz", indices=slice(0, 2))) == 2


def test_no_atoms():
    assert "empty: no atoms" in _error(validate_molecule, Molecule([], np.zeros((0, 3)),
                                                                   name="empty"))
