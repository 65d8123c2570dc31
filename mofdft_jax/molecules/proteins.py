"""Neutral all-atom proteins from a sequence or a PDB file (OpenMM / PDBFixer / PeptideBuilder).

The paper's timing proteins (spec §1.2, §5.7) are BBL-H142W (PDB 2WXC; 709 atoms, 2,676 electrons)
and protein B K5I/K39V (PDB 1PRB; 738 atoms, 2,750 electrons), "neutralised with OpenMM hydrogen
editing", only the edited hydrogens relaxed (Amber ff14SB, <= 100 steps). RDKit's ETKDG does not
embed a 750-atom chain (gave up after 187 s, environment_notes §8), so long chains are built as:

1. backbone and side chains from the sequence with fixed torsions (PeptideBuilder; alpha helix
   phi = -57, psi = -47 degrees by default), terminal OXT added;
2. PDBFixer: missing heavy atoms (terminal OXT of user files, incomplete side chains);
3. OpenMM ``Modeller.addHydrogens`` with the Amber14 templates and the neutral variants ASH, GLH,
   LYN, HIE (Python's ``random``, which OpenMM uses to place hydrogens, is seeded and restored);
4. local minimisation with Amber ff14SB in vacuum (OpenMM Reference platform, deterministic;
   1 nm cutoff) of the hydrogens only (``relax="hydrogens"``, the default for PDB files, whose heavy
   atoms are trusted), of hydrogens and side chains (``"sidechains"``), or of all atoms
   (``"all"``, 200 L-BFGS iterations, the default for sequence builds: PeptideBuilder's default
   rotamers clash in a helix, e.g. Leu CD2 1.8 A from O(i-4) and a Pro ring H 1.45 A from the next
   amide H; after it no non-bonded heavy-atom pair of 2WXC is closer than 2.6 A and the C-alpha
   trace stays within 0.4 A RMSD of the ideal helix);
5. neutralisation by editing hydrogens: the N-terminal NH3+ loses H3, the C-terminal COO- gains
   HXT on OXT (O-H 0.97 A, C-O-H 107 degrees, syn to the carbonyl O), each Arg loses HH22 (neutral
   guanidine); Asp/Glu/Lys at a chain end (Amber14 has no CASH, NLYN, ... templates) are edited
   the same way. Amber14 has no templates for these neutral forms, so the relaxation runs on the
   charged form before the edits; the added hydrogens are placed at ideal geometry.

The result has zero protonation charge (checked by counting hydrogens against the neutral formula,
:func:`protonation_charge`) and an even electron count. Chignolin ``YYDPETGTWY`` built this way has
168 atoms, like the paper's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import random
import time
from pathlib import Path

import numpy as np

from mofdft_jax.molecules.geometry import place_atom
from mofdft_jax.molecules.molecule import InputError, Molecule
from mofdft_jax.molecules.validate import validate_molecule

#: Alpha-helix backbone torsions (degrees) used for sequence builds.
HELIX_PHI_PSI = (-57.0, -47.0)
#: Extended beta-strand backbone torsions (degrees).
STRAND_PHI_PSI = (-120.0, 120.0)

#: Relaxation modes: which atoms the Amber ff14SB minimisation moves, and its iteration limit.
RELAX_MODES = ("sidechains", "hydrogens", "all", "none")
RELAX_ITERATIONS = {"hydrogens": 200, "sidechains": 300, "all": 200, "none": 0}

THREE_TO_ONE = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "ASH": "D", "CYS": "C", "CYX": "C",
    "CYM": "C", "GLN": "Q", "GLU": "E", "GLH": "E", "GLY": "G", "HIS": "H", "HID": "H",
    "HIE": "H", "HIP": "H", "HSD": "H", "HSE": "H", "HSP": "H", "ILE": "I", "LEU": "L",
    "LYS": "K", "LYN": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S", "THR": "T",
    "TRP": "W", "TYR": "Y", "VAL": "V",
}

#: Hydrogens of each residue inside a chain (-NH-CHR-CO-) in its neutral protonation state
#: (Asp/Glu COOH, Lys NH2, Arg neutral guanidine, His one ring NH). Caps are residues of their own.
NEUTRAL_RESIDUE_HYDROGENS = {
    "G": 3, "A": 5, "S": 5, "C": 5, "P": 7, "V": 9, "T": 7, "L": 11, "I": 11, "N": 6, "D": 5,
    "Q": 8, "K": 12, "E": 7, "H": 7, "F": 9, "R": 12, "Y": 9, "W": 10, "M": 9,
    "ACE": 3, "NME": 4, "NHE": 2,
}

#: Amber14 residue variant forced for each residue with an ionisable side chain.
NEUTRAL_VARIANTS = {"ASP": "ASH", "GLU": "GLH", "LYS": "LYN", "HIS": "HIE", "HID": "HIE",
                    "HIE": "HIE", "HIP": "HIE", "ASH": "ASH", "GLH": "GLH", "LYN": "LYN"}


@dataclasses.dataclass(frozen=True)
class ProteinSpec:
    """A protein of the paper's timing study and how we build it.

    Attributes:
      key: PDB id used as key ('2WXC').
      name: protein name ('BBL-H142W').
      sequence: one-letter sequence built when no PDB file is given.
      n_atoms_paper, n_electrons_paper: the paper's neutralised sizes (spec §1.2).
      stand_in: True when ``sequence`` is not the protein's (a same-size H/C/N/O substitute).
      note: where the sequence comes from and how it was checked.
    """

    key: str
    name: str
    sequence: str
    n_atoms_paper: int
    n_electrons_paper: int
    stand_in: bool
    note: str

    @property
    def label(self) -> str:
        """Name used for molecules and tables: '2WXC-BBL-H142W', or '2WXC-standin'."""
        return f"{self.key}-standin" if self.stand_in else f"{self.key}-{self.name}"


PAPER_PROTEINS: dict[str, ProteinSpec] = {
    "2WXC": ProteinSpec(
        key="2WXC", name="BBL-H142W", sequence="GSQNNDALSPAIRRLLAEWNLDASAIKGTGVGGRLTREDVEKHLAKA",
        n_atoms_paper=709, n_electrons_paper=2676, stand_in=False,
        note="47-residue BBL H142W as simulated by Lindorff-Larsen et al., Science 334, 517 "
             "(2011); the sequence is identical, residue by residue, to the BBL/2WXC entry of public "
             "lists of the D. E. Shaw fast-folding proteins (checked 2026-11-25 in stored public "
             "code), and its neutral all-atom formula (free termini, ASH/GLH/LYN/HIE, neutral Arg) "
             "gives exactly the paper's 709 atoms and 2,676 electrons."),
    "1PRB": ProteinSpec(
        key="1PRB", name="proteinB-K5I-K39V",
        sequence="LKNAIEDAIAELKKAGITSDFYFNAINKAKTVEEVNALVNEILKAHA",
        n_atoms_paper=738, n_electrons_paper=2750, stand_in=False,
        note="47-residue protein B (albumin-binding GA module) K5I/K39V as simulated by "
             "Lindorff-Larsen et al. (2011); identical to the PRB entry of public lists of the D. E. "
             "Shaw fast-folding proteins (checked 2026-11-25 in stored public code); the neutral formula gives "
             "exactly the paper's 738 atoms and 2,750 electrons (the wild type K5/K39 would give "
             "745 and 2,774), the geometry is built from the sequence, not read from the PDB entry."),
}


# ------------------------------------------------------------------------------- charge counting


def protonation_charge(chains: list[list[tuple[str, int]]]) -> int | None:
    """Net protonation charge of protein chains from their hydrogen counts.

    Every ionisation in a protein of standard residues is a (de)protonation, so

    .. math:: q = N_H - N_H^{neutral},

    with the neutral count summed from :data:`NEUTRAL_RESIDUE_HYDROGENS` plus one hydrogen per free
    N terminus (NH2 instead of NH) and one per free C terminus (COOH).

    Args:
      chains: per chain, the residues in order as (residue name, hydrogens present).

    Returns:
      the charge, or ``None`` if a residue is not a standard amino acid or cap (ligand, water).
    """
    total = 0
    for residues in chains:
        if not residues:
            continue
        for name, n_h in residues:
            key = name if name in ("ACE", "NME", "NHE") else THREE_TO_ONE.get(name)
            if key is None:
                return None
            total += n_h - NEUTRAL_RESIDUE_HYDROGENS[key]
        total -= 0 if residues[0][0] == "ACE" else 1
        total -= 0 if residues[-1][0] in ("NME", "NHE") else 1
    return int(total)


def protonation_charge_from_pdb_atoms(atoms) -> int | None:
    """:func:`protonation_charge` of ``read_pdb_atoms`` records (chains by chain id, residues by
    (chain, number, name)); ``None`` when not a protein of standard residues."""
    chains: dict[str, dict[tuple, int]] = {}
    for a in atoms:
        res = chains.setdefault(a.chain, {})
        key = (a.res_seq, a.res_name)
        res[key] = res.get(key, 0) + (a.number == 1)
    return protonation_charge([[(name, n_h) for (_, name), n_h in res.items()]
                               for res in chains.values()])


def _topology_charge(topology) -> int | None:
    chains = []
    for chain in topology.chains():
        chains.append([(r.name, sum(a.element.symbol == "H" for a in r.atoms()))
                       for r in chain.residues()])
    return protonation_charge(chains)


# ------------------------------------------------------------------------------- builders


@contextlib.contextmanager
def _seeded_python_random(seed: int):
    """Seed Python's global ``random`` (OpenMM's Modeller uses it) and restore it afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _check_sequence(sequence: str) -> str:
    seq = "".join(sequence.split()).upper()
    if not seq:
        raise InputError("empty protein sequence")
    for k, c in enumerate(seq):
        if c not in NEUTRAL_RESIDUE_HYDROGENS or len(c) != 1:
            raise InputError(f"sequence position {k + 1}: unknown residue code '{c}'")
        if c in "CM":
            raise InputError(f"sequence position {k + 1}: {'Cys' if c == 'C' else 'Met'} contains "
                             "sulfur, which is outside M-OFDFT's H, C, N, O, F density basis")
    return seq


def backbone_pdb_from_sequence(sequence: str, *, phi_deg: float = HELIX_PHI_PSI[0],
                               psi_deg: float = HELIX_PHI_PSI[1]) -> str:
    """PDB text of the heavy atoms of ``sequence`` built with fixed backbone torsions
    (PeptideBuilder default side-chain rotamers, omega = 180 degrees, terminal OXT)."""
    import PeptideBuilder
    from Bio.PDB import PDBIO
    from PeptideBuilder import Geometry

    geos = []
    for c in sequence:
        geo = Geometry.geometry(c)
        geo.phi = float(phi_deg)
        geo.psi_im1 = float(psi_deg)
        geos.append(geo)
    structure = PeptideBuilder.make_structure_from_geos(geos)
    PeptideBuilder.add_terminal_OXT(structure)
    buf = io.StringIO()
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(buf)
    return buf.getvalue()


def build_protein(sequence: str | ProteinSpec, *, name: str | None = None,
                  phi_deg: float = HELIX_PHI_PSI[0], psi_deg: float = HELIX_PHI_PSI[1],
                  relax: str = "all", seed: int = 0, pdb_out: str | Path | None = None,
                  timings: dict | None = None) -> Molecule:
    """Neutral all-atom protein from its sequence (module docstring, steps 1-5).

    Args:
      sequence: one-letter sequence (H/C/N/O residues only: no Cys, Met) or a :class:`ProteinSpec`.
      name: molecule name (default: the spec's label, or 'protein-<n>res').
      phi_deg, psi_deg: backbone torsions of every residue (default alpha helix).
      relax: 'all' (default), 'sidechains', 'hydrogens' or 'none' (module docstring, step 4).
      seed: seed for OpenMM's hydrogen placement; the same seed gives identical coordinates.
      pdb_out: also write the final structure (with residue names) as a PDB file.
      timings: if a dict is given, it receives wall-clock seconds per stage.

    Returns:
      the validated, neutral, closed-shell Molecule.
    """
    if isinstance(sequence, ProteinSpec):
        name = name or sequence.label
        sequence = sequence.sequence
    seq = _check_sequence(sequence)
    t0 = time.perf_counter()
    pdb_text = backbone_pdb_from_sequence(seq, phi_deg=phi_deg, psi_deg=psi_deg)
    if timings is not None:
        timings["backbone_s"] = time.perf_counter() - t0
    return _fix_protonate_neutralise(io.StringIO(pdb_text), name=name or f"protein-{len(seq)}res",
                                     relax=relax, seed=seed, pdb_out=pdb_out, source="sequence",
                                     timings=timings)


def protein_from_pdb(path: str | Path, *, name: str | None = None, relax: str = "hydrogens",
                     seed: int = 0, pdb_out: str | Path | None = None,
                     timings: dict | None = None) -> Molecule:
    """Neutral all-atom protein from a user's PDB file (first model).

    Heterogens and water are removed, missing heavy atoms added (PDBFixer; missing residues are
    not modelled), every hydrogen is removed and re-added with neutral variants (so the
    protonation does not depend on the file), then relaxed and neutralised (module docstring).
    A chain gap (C-N > 2 A between consecutive residues) raises InputError.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.read_text().strip():
        raise InputError(f"{p}: file is empty")
    return _fix_protonate_neutralise(p, name=name or p.stem, relax=relax, seed=seed,
                                     pdb_out=pdb_out, source=str(p), timings=timings)


def build_paper_protein(name: str, *, pdb_path: str | Path | None = None,
                        seed: int = 0) -> Molecule:
    """One of the paper's timing proteins: from the user's PDB file when given
    (:func:`protein_from_pdb`), else built from the sequence in :data:`PAPER_PROTEINS`
    (:func:`build_protein`).

    Args:
      name: PDB id ('2WXC', '1PRB'), protein name ('BBL-H142W', 'proteinB-K5I-K39V') or label,
        case-insensitive.
      pdb_path: the user's PDB file (e.g. from the paper's D. E. Shaw source) to use instead.
    """
    spec = find_protein_spec(name)
    if pdb_path is not None:
        return protein_from_pdb(pdb_path, name=f"{spec.label}-pdb", seed=seed)
    return build_protein(spec, seed=seed)


def find_protein_spec(name: str) -> ProteinSpec:
    """The :data:`PAPER_PROTEINS` entry whose key, name or label is ``name`` (case-insensitive)."""
    wanted = name.strip().lower()
    for spec in PAPER_PROTEINS.values():
        if wanted in (spec.key.lower(), spec.name.lower(), spec.label.lower()):
            return spec
    known = ", ".join(f"{s.key} ({s.name})" for s in PAPER_PROTEINS.values())
    raise InputError(f"unknown paper protein '{name}' (known: {known})")


def _fix_protonate_neutralise(pdb_source, *, name: str, relax: str, seed: int, pdb_out,
                              source: str, timings: dict | None) -> Molecule:
    """Steps 2-5 of the module docstring on a PDB file name or text stream."""
    import openmm
    from openmm import app, unit
    from pdbfixer import PDBFixer

    if relax not in RELAX_MODES:
        raise InputError(f"relax must be one of {RELAX_MODES}, got '{relax}'")
    t0 = time.perf_counter()
    try:
        if isinstance(pdb_source, Path):
            fixer = PDBFixer(filename=str(pdb_source))
        else:
            fixer = PDBFixer(pdbfile=pdb_source)
    except Exception as err:  # noqa: BLE001 - PDBFixer/OpenMM raise many types on bad files
        raise InputError(f"{source}: cannot read as PDB ({type(err).__name__}: {err})") from None
    fixer.removeHeterogens(keepWater=False)
    fixer.findMissingResidues()
    fixer.missingResidues = {}
    fixer.findNonstandardResidues()
    fixer.replaceNonstandardResidues()
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=seed)
    modeller = app.Modeller(fixer.topology, fixer.positions)
    if modeller.topology.getNumAtoms() == 0:
        raise InputError(f"{source}: no protein atoms")
    modeller.delete([a for a in modeller.topology.atoms() if a.element is not None
                     and a.element.symbol == "H"])
    _check_protein(modeller, source)
    t1 = time.perf_counter()

    forcefield = app.ForceField("amber14-all.xml")
    variants = _neutral_variants(modeller.topology)
    platform = openmm.Platform.getPlatformByName("Reference")
    try:
        with _seeded_python_random(seed):
            modeller.addHydrogens(forcefield, variants=variants, platform=platform)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{source}: OpenMM could not add hydrogens ({err})") from None
    t2 = time.perf_counter()

    positions = np.array(modeller.positions.value_in_unit(unit.nanometer))
    if relax != "none":
        system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.CutoffNonPeriodic,
                                         nonbondedCutoff=1.0 * unit.nanometer, constraints=None,
                                         rigidWater=False)
        backbone = {"N", "CA", "C", "O", "OXT"}
        for atom in modeller.topology.atoms():
            movable = atom.element.symbol == "H" or relax == "all" or (
                relax == "sidechains" and atom.name not in backbone)
            if not movable:
                system.setParticleMass(atom.index, 0.0)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
        context.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, RELAX_ITERATIONS[relax])
        positions = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(
            unit.nanometer)
        positions = np.array(positions)
    t3 = time.perf_counter()

    topology, positions = _neutralise(modeller.topology, positions * 10.0)  # Angstrom from here on
    charge = _topology_charge(topology)
    if charge != 0:
        raise InputError(f"{source}: protonation charge {charge} after neutralisation (a residue "
                         "the neutraliser does not know?)")
    numbers = np.array([a.element.atomic_number for a in topology.atoms()], dtype=np.int64)
    mol = Molecule.from_angstrom(numbers, positions, name=name)
    validate_molecule(mol, source=f"{source} ({name})")
    if pdb_out is not None:
        with open(pdb_out, "w") as fh:
            app.PDBFile.writeFile(topology, positions * unit.angstrom, fh, keepIds=False)
    if timings is not None:
        timings.update(fix_s=t1 - t0, add_hydrogens_s=t2 - t1, relax_s=t3 - t2,
                       neutralise_s=time.perf_counter() - t3)
    return mol


def _neutral_variants(topology) -> list[str | None]:
    """Amber14 variant per residue: ASH, GLH, LYN, HIE inside chains; at chain ends, where Amber14
    has only charged terminal templates (CASP, NLYS, ...), the charged ASP, GLU, LYS, which
    :func:`_neutralise` then edits to neutral."""
    variants: list[str | None] = []
    for chain in topology.chains():
        residues = list(chain.residues())
        for k, r in enumerate(residues):
            variant = NEUTRAL_VARIANTS.get(r.name)
            if k in (0, len(residues) - 1) and variant in ("ASH", "GLH", "LYN"):
                variant = {"ASH": "ASP", "GLH": "GLU", "LYN": "LYS"}[variant]
            variants.append(variant)
    return variants


def _check_protein(modeller, source: str) -> None:
    """Refuse sulfur residues and chain gaps before spending time on hydrogens."""
    allowed = ("H", "C", "N", "O", "F")
    for chain in modeller.topology.chains():
        residues = list(chain.residues())
        for r in residues:
            bad = next((a for a in r.atoms() if a.element is None
                        or a.element.symbol not in allowed), None)
            if bad is not None:
                element = bad.element.symbol if bad.element is not None else "unknown element"
                raise InputError(f"{source}: residue {r.name} {r.id} (chain {chain.id}) has atom "
                                 f"{bad.name} ({element}); M-OFDFT supports H, C, N, O, F only")
        pos = modeller.positions
        for a, b in zip(residues[:-1], residues[1:], strict=True):
            c = next((x for x in a.atoms() if x.name == "C"), None)
            n = next((x for x in b.atoms() if x.name == "N"), None)
            if c is None or n is None:
                continue
            d = np.linalg.norm(np.array(pos[c.index].value_in_unit(pos.unit))
                               - np.array(pos[n.index].value_in_unit(pos.unit)))
            d_ang = d * (10.0 if str(pos.unit) == "nanometer" else 1.0)
            if d_ang > 2.0:
                raise InputError(f"{source}: chain {chain.id} is broken between {a.name} {a.id} "
                                 f"and {b.name} {b.id} (C-N {d_ang:.1f} Angstrom); missing "
                                 "residues are not modelled")


def _neutralise(topology, positions_angstrom: np.ndarray):
    """Edit hydrogens to the neutral form and return a new OpenMM Topology and positions (Angstrom).

    Removed: one H of the N-terminal NH3+ (H3; NH2+ of a Pro), HH22 of each Arg, HZ3 of a charged
    Lys. Added (O-H 0.97 A, C-O-H 107 degrees, syn to the other carboxyl O): HXT on the C-terminal
    OXT, HD2 on OD2 of a charged Asp, HE2 on OE2 of a charged Glu. Asp/Glu/Lys are charged here only
    at chain ends, where Amber14 has no neutral terminal templates (no CASH, NLYN, ...). Residue
    names stay standard (ASP, GLU, LYS, HIS), as OpenMM writes them; the hydrogens tell the state.
    """
    from openmm import app

    remove: set[int] = set()
    add: dict[int, tuple[str, np.ndarray]] = {}  # O atom index -> (H name, position)
    bonded_h: dict[int, list] = {}
    for a, b in topology.bonds():
        for x, y in ((a, b), (b, a)):
            if y.element.symbol == "H":
                bonded_h.setdefault(x.index, []).append(y)

    def protonate(residue, o_other: str, carbon: str, o_target: str, h_name: str) -> None:
        atoms = {a.name: a for a in residue.atoms()}
        if any(k not in atoms for k in (o_other, carbon, o_target)) or h_name in atoms:
            return
        o, c, ot = (positions_angstrom[atoms[k].index] for k in (o_other, carbon, o_target))
        add[atoms[o_target].index] = (h_name, place_atom(o, c, ot, 0.97, np.radians(107.0), 0.0))

    for chain in topology.chains():
        residues = list(chain.residues())
        if not residues:
            continue
        first, last = residues[0], residues[-1]
        n_atom = next((a for a in first.atoms() if a.name == "N"), None)
        if first.name != "ACE" and n_atom is not None:
            n_h = bonded_h.get(n_atom.index, [])
            if len(n_h) == (2 if first.name == "PRO" else 3):  # NH3+ (NH2+ for Pro)
                remove.add(max(n_h, key=lambda a: (a.name == "H3", a.name)).index)
        if last.name not in ("NME", "NHE"):
            protonate(last, "O", "C", "OXT", "HXT")
        for r in residues:
            names = {a.name: a for a in r.atoms()}
            if r.name == "ARG" and "HH22" in names:
                remove.add(names["HH22"].index)
            elif r.name == "LYS" and "HZ3" in names:
                remove.add(names["HZ3"].index)
            elif r.name == "ASP" and "HD2" not in names:
                protonate(r, "OD1", "CG", "OD2", "HD2")
            elif r.name == "GLU" and "HE2" not in names:
                protonate(r, "OE1", "CD", "OE2", "HE2")
    new = app.Topology()
    new_atoms = {}
    coords = []
    for chain in topology.chains():
        nc = new.addChain(chain.id)
        for r in chain.residues():
            nr = new.addResidue(r.name, nc, r.id, r.insertionCode)
            for a in r.atoms():
                if a.index in remove:
                    continue
                new_atoms[a.index] = new.addAtom(a.name, a.element, nr)
                coords.append(positions_angstrom[a.index])
                if a.index in add:
                    hname, hpos = add[a.index]
                    hx = new.addAtom(hname, app.element.hydrogen, nr)
                    new.addBond(new_atoms[a.index], hx)
                    coords.append(hpos)
    for b in topology.bonds():
        if b[0].index in new_atoms and b[1].index in new_atoms:
            new.addBond(new_atoms[b[0].index], new_atoms[b[1].index])
    return new, np.array(coords)
