"""Host layer: molecules from files, SMILES and sequences; validation before expensive work.

Contract: every public function returns :class:`Molecule` records (coordinates in Bohr; files are
read and written in Angstrom) that passed :func:`validate_molecule` (H, C, N, O, F only, neutral and
closed-shell unless explicitly allowed, finite coordinates, no atoms closer than 0.5 A). Bad input
raises :class:`InputError` with one line naming the file, line or atom. RDKit, OpenMM, PDBFixer and
PeptideBuilder are imported lazily inside the functions that need them.
"""

from mofdft_jax.molecules.io import (
    Qm9Record,
    read_md17_npz,
    read_molecules,
    read_pdb,
    read_qm9_xyz,
    read_smiles_file,
    read_xyz,
    write_xyz,
)
from mofdft_jax.molecules.molecule import InputError, Molecule
from mofdft_jax.molecules.peptides import (
    CHIGNOLIN_SEQUENCE,
    chignolin,
    chignolin_fragments,
    peptide_molecule,
    peptide_smiles,
)
from mofdft_jax.molecules.proteins import (
    PAPER_PROTEINS,
    ProteinSpec,
    build_paper_protein,
    build_protein,
    find_protein_spec,
    protein_from_pdb,
)
from mofdft_jax.molecules.sampling import (
    bond_scan,
    find_chain,
    internal_modes,
    sample_thermal_conformers,
    torsion_scan,
)
from mofdft_jax.molecules.smiles import molecule_from_smiles, optimize_mmff
from mofdft_jax.molecules.validate import validate_molecule

__all__ = [
    "CHIGNOLIN_SEQUENCE",
    "PAPER_PROTEINS",
    "InputError",
    "Molecule",
    "ProteinSpec",
    "Qm9Record",
    "bond_scan",
    "build_paper_protein",
    "build_protein",
    "chignolin",
    "chignolin_fragments",
    "find_chain",
    "find_protein_spec",
    "internal_modes",
    "molecule_from_smiles",
    "optimize_mmff",
    "peptide_molecule",
    "peptide_smiles",
    "protein_from_pdb",
    "read_md17_npz",
    "read_molecules",
    "read_pdb",
    "read_qm9_xyz",
    "read_smiles_file",
    "read_xyz",
    "sample_thermal_conformers",
    "torsion_scan",
    "validate_molecule",
    "write_xyz",
]
