"""Peptides from sequences (RDKit route): L-residues, neutral protonation, termini, chignolin."""

import re
from collections import Counter

import numpy as np
import pytest
from rdkit import Chem

from mofdft_jax.molecules import (
    CHIGNOLIN_SEQUENCE,
    InputError,
    chignolin,
    chignolin_fragments,
    peptide_molecule,
    peptide_smiles,
)
from mofdft_jax.molecules.geometry import bond_pairs

#: Free (neutral, non-zwitterionic) amino acids, textbook formulas: a chain of n residues is their
#: sum minus (n - 1) H2O.
AMINO_ACID_FORMULAS = {
    "G": "C2H5NO2", "A": "C3H7NO2", "S": "C3H7NO3", "P": "C5H9NO2", "V": "C5H11NO2",
    "T": "C4H9NO3", "L": "C6H13NO2", "I": "C6H13NO2", "N": "C4H8N2O3", "D": "C4H7NO4",
    "Q": "C5H10N2O3", "K": "C6H14N2O2", "E": "C5H9NO4", "H": "C6H9N3O2", "F": "C9H11NO2",
    "R": "C6H14N4O2", "Y": "C9H11NO3", "W": "C11H12N2O2",
}


def _counts(formula: str) -> Counter:
    out = Counter()
    for sym, n in re.findall(r"([A-Z][a-z]?)(\d*)", formula):
        out[sym] += int(n) if n else 1
    return out


def _expected_neutral(sequence: str) -> Counter:
    total = Counter()
    for c in sequence:
        total.update(_counts(AMINO_ACID_FORMULAS[c]))
    total.subtract({"H": 2 * (len(sequence) - 1), "O": len(sequence) - 1})
    return +total


def _graph_counts(smiles: str) -> tuple[Counter, int, int]:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    counts = Counter(a.GetSymbol() for a in mol.GetAtoms())
    return (counts, Chem.GetFormalCharge(mol),
            sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms()))


def test_residue_templates_match_rdkit_sequences():
    """Every residue (incl. Cys/Met, Pro, Gly, both Thr/Ile stereocentres) gives the same isomeric
    molecule as RDKit's independent MolFromSequence (L-amino acids, neutral termini)."""
    for seq in list("ARNDCQEHILKMFSTWYVGP") + ["ARNDCQEHILKMFSTWYVGPGPPA", CHIGNOLIN_SEQUENCE]:
        ours = Chem.CanonSmiles(peptide_smiles(seq))
        rdkit = Chem.MolToSmiles(Chem.MolFromSequence(seq))
        assert ours == Chem.CanonSmiles(rdkit), seq


def test_every_chignolin_fragment_is_neutral_closed_shell_with_textbook_formula():
    """All 1-5-residue fragments (40): composition = sum of amino acids - (n-1) H2O, neutral,
    no radicals; the capped (ACE/NME) and H-capped forms differ by exactly the cap atoms and stay
    neutral with an even electron count."""
    for length in range(1, 6):
        for start in range(len(CHIGNOLIN_SEQUENCE) - length + 1):
            seq = CHIGNOLIN_SEQUENCE[start:start + length]
            counts, charge, radicals = _graph_counts(peptide_smiles(seq, "neutral"))
            assert counts == _expected_neutral(seq) and charge == 0 and radicals == 0
            capped, charge, radicals = _graph_counts(peptide_smiles(seq, "capped"))
            # H- -> CH3CO- (+C2H2O) and -OH -> -NHCH3 (+CH3N -O): +C3H5N in total
            assert capped - counts == Counter({"C": 3, "H": 5, "N": 1}) and not counts - capped
            assert charge == 0 and radicals == 0
            hcap, _, _ = _graph_counts(peptide_smiles(seq, "hcap"))
            assert counts - hcap == Counter({"O": 1})  # COOH -> CHO
            for c in (capped, hcap):
                z = 6 * c["C"] + c["H"] + 7 * c["N"] + 8 * c["O"]
                assert z % 2 == 0


def test_caps_known_molecules():
    """Ac-Gly-NHMe is C5H10N2O2 and Ac-Ala-NHMe (the alanine dipeptide) C6H12N2O2 (22 atoms);
    H-capped Gly is aminoacetaldehyde C2H5NO."""
    assert _graph_counts(peptide_smiles("G", "capped"))[0] == _counts("C5H10N2O2")
    assert _graph_counts(peptide_smiles("A", "capped"))[0] == _counts("C6H12N2O2")
    assert _graph_counts(peptide_smiles("G", "hcap"))[0] == _counts("C2H5NO")
    with pytest.raises(InputError, match="unknown amino-acid one-letter code 'X'"):
        peptide_smiles("AXA")
    with pytest.raises(InputError, match="termini must be one of"):
        peptide_smiles("AA", "zwitterion")


def test_embedded_dipeptides_and_chignolin():
    """3D fragments: 9 dipeptides of chignolin, named by position, neutral and closed shell, with
    planar-amide C-N bond lengths (MMFF94: 1.33-1.39 A); chignolin has 168 atoms and 684 electrons
    (spec §1.2)."""
    frags = chignolin_fragments(2, seed=0)
    assert [f.name for f in frags][:3] == ["chignolin-f0-YY", "chignolin-f1-YD", "chignolin-f2-DP"]
    for f in frags:
        seq = f.name.split("-")[-1]
        assert Counter(f.symbols) == _expected_neutral(seq)
        assert f.charge == 0 and f.spin == 0 and f.n_electrons % 2 == 0
    assert len(chignolin_fragments(1, unique=True)) == 7  # Y, D, P, E, T, G, W
    capped = peptide_molecule("GY", termini="capped", seed=2)
    x = capped.coords_angstrom
    cn = [np.linalg.norm(x[i] - x[j]) for i, j in bond_pairs(capped.numbers, x)
          if {capped.symbols[i], capped.symbols[j]} == {"C", "N"}]
    assert len(cn) == 6  # 3 amide C(O)-N bonds and 3 N-C(alpha or methyl) single bonds
    assert sum(1.33 < d < 1.39 for d in cn) == 3 and sum(1.43 < d < 1.48 for d in cn) == 3
    chig = chignolin(seed=0, optimize=False)  # ETKDG only: the MMFF step costs ~3 s more
    assert chig.natm == 168 and chig.n_electrons == 684 and chig.formula == "C62H75N11O20"
