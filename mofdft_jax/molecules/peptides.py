"""Short peptides from a sequence with RDKit: neutral, closed-shell, all-atom, ETKDG + MMFF.

Chignolin (CLN025, ``YYDPETGTWY``) and its fragments are the paper's peptide extrapolation set
(spec §1.2, §5.4): training on 2-5-residue fragments, testing on the 168-atom neutralised chignolin.
Fragments are written as SMILES from per-residue templates (L-amino acids, neutral protonation:
Asp/Glu as COOH (ASH/GLH), Lys as NH2 (LYN), Arg as neutral guanidine, His as the N-epsilon
tautomer (HIE)) and embedded with ETKDGv3 + MMFF94 (``molecule_from_smiles``), which works up to
chignolin size; longer chains go through :mod:`mofdft_jax.molecules.proteins`.

Termini (``termini=``):

- ``"neutral"``: H2N-...-COOH (the form whose chignolin has 168 atoms, spec §1.2);
- ``"capped"``: acetyl (ACE) and N-methylamide (NME) caps, CH3CO-NH-...-CO-NH-CH3;
- ``"hcap"``: cut out of a chain at the peptide bonds and H-capped, H2N-...-CHO (the paper's
  "H-capped" fragments).
"""

from __future__ import annotations

from mofdft_jax.molecules.molecule import InputError, Molecule

#: Chignolin variant CLN025 as used by the paper (spec §1.2): 168 atoms once neutralised.
CHIGNOLIN_SEQUENCE = "YYDPETGTWY"

#: Side chains in the template ``N[C@@H](<side>)C(=O)`` (L configuration), neutral protonation.
#: Gly and Pro have their own backbone templates.
SIDE_CHAIN_SMILES = {
    "A": "C",
    "R": "CCCNC(=N)N",
    "N": "CC(N)=O",
    "D": "CC(=O)O",
    "C": "CS",
    "Q": "CCC(N)=O",
    "E": "CCC(=O)O",
    "H": "Cc1c[nH]cn1",
    "I": "[C@@H](C)CC",
    "L": "CC(C)C",
    "K": "CCCCN",
    "M": "CCSC",
    "F": "Cc1ccccc1",
    "S": "CO",
    "T": "[C@@H](C)O",
    "W": "Cc1c[nH]c2ccccc12",
    "Y": "Cc1ccc(O)cc1",
    "V": "C(C)C",
}

TERMINI = ("neutral", "capped", "hcap")


def residue_smiles(code: str) -> str:
    """SMILES of one residue inside a chain, from its N to its carbonyl C (no termini)."""
    if code == "G":
        return "NCC(=O)"
    if code == "P":
        return "N1[C@@H](CCC1)C(=O)"
    try:
        return f"N[C@@H]({SIDE_CHAIN_SMILES[code]})C(=O)"
    except KeyError:
        raise InputError(f"unknown amino-acid one-letter code '{code}' (use the 20 standard "
                         "residues)") from None


def peptide_smiles(sequence: str, termini: str = "neutral") -> str:
    """SMILES of a linear L-peptide with neutral side chains and the given termini (module doc)."""
    if not sequence:
        raise InputError("empty peptide sequence")
    if termini not in TERMINI:
        raise InputError(f"termini must be one of {TERMINI}, got '{termini}'")
    body = "".join(residue_smiles(c) for c in sequence.upper())
    if termini == "neutral":
        return body + "O"
    if termini == "capped":
        return "CC(=O)" + body + "NC"
    return body  # hcap: the final C(=O) keeps its implicit H -> aldehyde


def peptide_molecule(sequence: str, *, termini: str = "neutral", seed: int = 0,
                     name: str | None = None, optimize: bool = True) -> Molecule:
    """All-atom 3D peptide: :func:`peptide_smiles` -> RDKit AddHs, ETKDGv3 (seeded), MMFF94.

    The result is neutral and closed-shell by construction and validated (H, C, N, O only unless the
    sequence has Cys/Met, which validation refuses: sulfur is outside the density basis).
    """
    from mofdft_jax.molecules.smiles import molecule_from_smiles

    seq = sequence.upper()
    return molecule_from_smiles(peptide_smiles(seq, termini), seed=seed, optimize=optimize,
                                name=name or f"{seq}-{termini}",
                                source=f"peptide {seq} ({termini} termini)")


def chignolin(*, seed: int = 0, method: str = "rdkit", optimize: bool = True) -> Molecule:
    """Neutral chignolin ``YYDPETGTWY`` (168 atoms, 684 electrons).

    ``method="rdkit"``: ETKDG random conformer, MMFF94-optimised when ``optimize`` (a few
    seconds; the MMFF step is most of it);
    ``method="protein"``: the long-chain route (PeptideBuilder helix -> PDBFixer -> OpenMM
    hydrogens -> neutralisation), :func:`~mofdft_jax.molecules.proteins.build_protein`.
    """
    if method == "rdkit":
        return peptide_molecule(CHIGNOLIN_SEQUENCE, termini="neutral", seed=seed, name="chignolin",
                                optimize=optimize)
    if method == "protein":
        from mofdft_jax.molecules.proteins import build_protein

        return build_protein(CHIGNOLIN_SEQUENCE, name="chignolin", seed=seed)
    raise InputError(f"method must be 'rdkit' or 'protein', got '{method}'")


def chignolin_fragments(length: int, *, termini: str = "neutral", seed: int = 0,
                        unique: bool = False) -> list[Molecule]:
    """Every contiguous ``length``-residue fragment of chignolin (1 <= length <= 10).

    Fragments are named ``chignolin-f<start>-<SEQ>`` (start 0-based). With ``unique=True`` repeated
    sequences (YY... appears at several positions for length 1) are built once.
    """
    if not 1 <= length <= len(CHIGNOLIN_SEQUENCE):
        raise InputError(f"fragment length must be 1..{len(CHIGNOLIN_SEQUENCE)}, got {length}")
    out, seen = [], set()
    for start in range(len(CHIGNOLIN_SEQUENCE) - length + 1):
        seq = CHIGNOLIN_SEQUENCE[start:start + length]
        if unique and seq in seen:
            continue
        seen.add(seq)
        out.append(peptide_molecule(seq, termini=termini, seed=seed,
                                    name=f"chignolin-f{start}-{seq}"))
    return out
