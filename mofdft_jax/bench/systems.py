"""Molecules of the timing studies: size series (alkanes, glycine peptides) and the proteins.

A system is named by a short spec string so that it can be passed to a measurement subprocess and
written in tables:

===================  =======================================================================
spec                 molecule
===================  =======================================================================
``alkane:N``         linear alkane CₙH₂ₙ₊₂ (SMILES, RDKit ETKDG + MMFF, seed 0)
``peptide:SEQ``      linear peptide of one-letter sequence SEQ, neutral termini (RDKit)
``protein:NAME``     a paper protein (``2WXC``, ``1PRB``; built from sequence, OpenMM)
``chignolin``        chignolin YYDPETGTWY (168 atoms, RDKit)
``smiles:SMILES``    any molecule from SMILES (RDKit ETKDG + MMFF, seed 0)
``file:PATH``        the first molecule of a file (xyz, pdb, ...)
===================  =======================================================================

Built molecules are cached as xyz files (``cache_dir``), so the 20 s protein build and the RDKit
embeddings run once, and every method times exactly the same geometry.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mofdft_jax.molecules import Molecule


def build_system(spec: str) -> Molecule:
    """The molecule of a system spec (module docstring)."""
    from mofdft_jax.molecules import InputError

    kind, _, arg = spec.partition(":")
    if kind == "alkane":
        from mofdft_jax.molecules.smiles import molecule_from_smiles

        n = int(arg)
        return molecule_from_smiles("C" * n, seed=0, name=f"C{n}H{2 * n + 2}")
    if kind == "peptide":
        from mofdft_jax.molecules.peptides import peptide_molecule

        return peptide_molecule(arg, name=f"peptide-{arg}")
    if kind == "protein":
        from mofdft_jax.molecules.proteins import build_paper_protein

        return build_paper_protein(arg)
    if kind == "chignolin":
        from mofdft_jax.molecules.peptides import chignolin

        return chignolin()
    if kind == "smiles":
        from mofdft_jax.molecules.smiles import molecule_from_smiles

        return molecule_from_smiles(arg, seed=0, name=arg)
    if kind == "file":
        from mofdft_jax.molecules.io import read_molecules

        return read_molecules(arg)[0]
    raise InputError(f"unknown system spec {spec!r} (alkane:N, peptide:SEQ, protein:NAME, "
                     "chignolin, smiles:SMILES, file:PATH)")


def cached_system(spec: str, cache_dir: Path | None) -> Molecule:
    """:func:`build_system`, cached as ``<cache_dir>/systems/<name>-<hash>.xyz``."""
    if cache_dir is None or spec.startswith("file:"):
        return build_system(spec)
    from mofdft_jax.molecules.io import read_molecules, write_xyz

    digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
    path = Path(cache_dir) / "systems" / f"{spec.replace(':', '-')[:40]}-{digest}.xyz"
    if path.exists():
        molecule = read_molecules(path)[0]
        return molecule
    molecule = build_system(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_xyz(path, molecule)
    return molecule


def system_file(spec: str, cache_dir: Path) -> Path:
    """Path of the cached xyz of ``spec`` (built if needed); ``file:`` specs return their path."""
    if spec.startswith("file:"):
        return Path(spec[5:])
    cached_system(spec, cache_dir)
    digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
    return Path(cache_dir) / "systems" / f"{spec.replace(':', '-')[:40]}-{digest}.xyz"


def size_series(alkanes=(), peptides=()) -> list[str]:
    """System specs of a size series: ``alkane:N`` for N in ``alkanes``, ``peptide:G…G`` of the
    given glycine counts in ``peptides``."""
    return [f"alkane:{n}" for n in alkanes] + [f"peptide:{'G' * n}" for n in peptides]
