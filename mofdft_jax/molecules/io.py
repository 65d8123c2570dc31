"""Molecule readers and writers at the user boundary (files speak Angstrom, Molecule speaks Bohr).

Formats (issue 4, "Molecules"):

- xyz, single or multi-frame (:func:`read_xyz`, :func:`write_xyz`); the comment line carries the
  name and optional ``charge=`` / ``spin=`` / ``energy_ha=`` tokens.
- QM9 extended xyz (:func:`read_qm9_xyz`): line 2 is ``gdb N A B C mu alpha homo lumo gap r2 zpve
  U0 U H G Cv``, atom lines have a fifth column (Mulliken charge), numbers may be written as
  ``1.2*^-6`` (Mathematica), and three trailing lines hold frequencies, SMILES and InChI.
- MD17 / sGDML ``.npz`` (:func:`read_md17_npz`): ``R`` (nframe, natm, 3) Angstrom, ``z``, ``E``
  kcal/mol, ``F`` kcal/mol/Angstrom; rMD17 key names (``coords``, ``nuclear_charges``, ``energies``,
  ``forces``) are accepted too.
- PDB (:func:`read_pdb`): ATOM/HETATM records of the first model, hydrogens kept.
- SMILES (``smiles:CCO`` in :func:`read_molecules`, ``.smi`` files).

Every reader validates what it returns (:func:`~mofdft_jax.molecules.validate.validate_molecule`)
unless ``validate=False``; malformed files raise :class:`InputError` naming the file and line.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mofdft_jax.molecules.molecule import InputError, Molecule
from mofdft_jax.molecules.validate import (
    MIN_DISTANCE_ANGSTROM,
    atomic_number,
    current_refusal_advice,
    element_symbol,
    validate_molecule,
)
from mofdft_jax.units import HA_PER_BOHR_TO_KCAL_PER_ANGSTROM, KCAL_TO_HARTREE

PathLike = str | os.PathLike


def _read_lines(path: PathLike) -> list[str]:
    """Lines of a text file; missing, unreadable, binary or empty files raise InputError."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a molecule file")
    try:
        text = p.read_text()
    except UnicodeDecodeError as err:
        raise InputError(f"{p}: not a text file ({err.reason} at byte {err.start})") from None
    if not text.strip():
        raise InputError(f"{p}: file is empty")
    return text.splitlines()


def _float(token: str) -> float:
    """Parse a float, accepting Mathematica exponents ('2.1997*^-6', as in QM9)."""
    return float(token.replace("*^", "e"))


# ----------------------------------------------------------------------------------------- xyz


_KEY_RE = re.compile(r"^(charge|spin|energy_ha)=(\S+)$")


def _parse_comment(comment: str, default_name: str, where: str) -> dict:
    """Name, charge, spin and energy from an xyz comment line written by :func:`write_xyz`."""
    fields: dict = {"name": default_name}
    rest = []
    for token in comment.split():
        m = _KEY_RE.match(token)
        if m is None:
            rest.append(token)
            continue
        key, value = m.groups()
        try:
            fields[key if key != "energy_ha" else "energy_ref"] = (
                float(value) if key == "energy_ha" else int(value))
        except ValueError:
            raise InputError(f"{where}: cannot read '{token}' (expected an integer charge/spin "
                             "or a float energy_ha)") from None
    name = " ".join(rest)
    if name and "=" not in name and len(name) <= 120:
        fields["name"] = name
    return fields


def read_xyz(path: PathLike, *, validate: bool = True, allow_charged: bool = False,
             allow_open_shell: bool = False) -> list[Molecule]:
    """All frames of an xyz file (Angstrom), one Molecule per frame.

    Each frame is ``natm`` / comment / ``natm`` lines ``symbol x y z [extra columns ignored]``; the
    symbol may be an atomic number. Blank lines between frames are skipped. The comment line gives
    the name (else ``<stem>`` or ``<stem>-<frame>``) and optional ``charge=``, ``spin=``,
    ``energy_ha=`` tokens. A QM9 file (line 2 starting with ``gdb``) is delegated to
    :func:`read_qm9_xyz`.

    Raises:
      InputError: empty or malformed file (naming file and line), or a frame that fails validation
        (naming file, frame, atom and line).
    """
    lines = _read_lines(path)
    if len(lines) > 1 and lines[1].startswith("gdb "):
        return [read_qm9_xyz(path, validate=validate).molecule]
    stem = Path(path).stem
    p = str(path)
    frames: list[tuple[Molecule, list[int], int]] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        header = lines[i].split()
        try:
            natm = int(header[0])
            if len(header) != 1:
                raise ValueError
        except ValueError:
            raise InputError(f"{p} line {i + 1}: expected the number of atoms of a frame, got "
                             f"'{lines[i].strip()[:60]}'") from None
        if natm <= 0:
            raise InputError(f"{p} line {i + 1}: a frame must have at least one atom, got {natm}")
        if i + 2 + natm > len(lines):
            n_have = max(0, len(lines) - i - 2)
            raise InputError(f"{p} line {i + 1}: frame promises {natm} atoms but the file ends "
                             f"after {n_have} atom line(s)")
        comment = lines[i + 1]
        numbers = np.empty(natm, dtype=np.int64)
        coords = np.empty((natm, 3))
        atom_lines = list(range(i + 3, i + 3 + natm))
        for k in range(natm):
            ln = i + 2 + k
            tokens = lines[ln].split()
            if len(tokens) < 4:
                raise InputError(f"{p} line {ln + 1}: expected 'symbol x y z', got "
                                 f"'{lines[ln].strip()[:60]}' (frame promises {natm} atoms)")
            z = atomic_number(tokens[0])
            if z is None:
                raise InputError(f"{p} line {ln + 1}: unknown element symbol '{tokens[0]}'")
            try:
                coords[k] = [_float(t) for t in tokens[1:4]]
            except ValueError:
                raise InputError(f"{p} line {ln + 1}: cannot read coordinates from "
                                 f"'{lines[ln].strip()[:60]}'") from None
            numbers[k] = z
        fields = _parse_comment(comment, stem, f"{p} line {i + 2}")
        frames.append((Molecule.from_angstrom(numbers, coords, **fields), atom_lines, i + 1))
        i += 2 + natm
    if len(frames) > 1:
        frames = [(m if m.name != stem else dataclasses.replace(m, name=f"{stem}-{f}"), al, h)
                  for f, (m, al, h) in enumerate(frames)]
    if validate:
        for f, (m, al, _) in enumerate(frames):
            where = p if len(frames) == 1 else f"{p} frame {f}"
            validate_molecule(m, allow_charged=allow_charged, allow_open_shell=allow_open_shell,
                              source=where, atom_lines=al)
    return [m for m, _, _ in frames]


def write_xyz(path: PathLike, molecules: Molecule | Iterable[Molecule]) -> Path:
    """Write molecules as a (multi-frame) xyz file in Angstrom, 12 decimals (round trip < 1e-10 A).

    The comment line is the name, then ``charge=``/``spin=`` when non-zero and ``energy_ha=`` when
    the molecule carries a reference energy (forces are not written). Returns the path.
    """
    if isinstance(molecules, Molecule):
        molecules = [molecules]
    out = []
    for mol in molecules:
        comment = [mol.name.replace("\n", " ")]
        if mol.charge:
            comment.append(f"charge={mol.charge}")
        if mol.spin:
            comment.append(f"spin={mol.spin}")
        if mol.energy_ref is not None:
            comment.append(f"energy_ha={mol.energy_ref!r}")
        out.append(f"{mol.natm}\n{' '.join(comment)}\n")
        for z, (x, y, zz) in zip(mol.numbers, mol.coords_angstrom, strict=True):
            out.append(f"{element_symbol(z):<2s} {x:20.12f} {y:20.12f} {zz:20.12f}\n")
    path = Path(path)
    path.write_text("".join(out))
    return path


# ----------------------------------------------------------------------------------------- QM9

#: Names (with units) of the 15 numbers after ``gdb N`` on line 2 of a QM9 file (Ramakrishnan et
#: al., Sci. Data 1, 140022 (2014), Table 2).
QM9_PROPERTIES = ("a_ghz", "b_ghz", "c_ghz", "mu_debye", "alpha_bohr3", "homo_ha", "lumo_ha",
                  "gap_ha", "r2_bohr2", "zpve_ha", "u0_ha", "u_ha", "h_ha", "g_ha", "cv_cal_molk")


@dataclasses.dataclass(frozen=True, eq=False)
class Qm9Record:
    """One QM9 file: the molecule plus what the record says about it.

    ``molecule.energy_ref`` stays ``None``: QM9's energies are B3LYP/6-31G(2df,p) (U0 includes the
    zero-point energy), not PBE references; they live in ``properties``.

    Attributes:
      molecule: the Molecule (name ``qm9_<index>``, 6 digits).
      index: the QM9 index N of ``gdb N``.
      properties: :data:`QM9_PROPERTIES` -> value, in the units of the name suffix.
      mulliken_charges: ``(natm,)`` Mulliken charges (e) from column 5.
      frequencies_cm: harmonic frequencies (cm^-1), ``3N-6`` (or ``3N-5``) values.
      smiles_gdb, smiles_relaxed: SMILES from GDB-17 and after B3LYP relaxation.
      inchi_gdb, inchi_relaxed: the same as InChI.
    """

    molecule: Molecule
    index: int
    properties: dict
    mulliken_charges: np.ndarray
    frequencies_cm: np.ndarray
    smiles_gdb: str
    smiles_relaxed: str
    inchi_gdb: str
    inchi_relaxed: str


def read_qm9_xyz(path: PathLike, *, validate: bool = True) -> Qm9Record:
    """Parse one QM9 dataset file (``dsgdb9nsd_NNNNNN.xyz``); see the module docstring for the
    format. Raises :class:`InputError` naming file and line on malformed records."""
    lines = _read_lines(path)
    p = str(path)
    try:
        natm = int(lines[0].split()[0])
    except (ValueError, IndexError):
        raise InputError(f"{p} line 1: expected the number of atoms, got "
                         f"'{lines[0].strip()[:60]}'") from None
    if len(lines) < natm + 5:
        raise InputError(f"{p}: a QM9 record with {natm} atoms has {natm + 5} lines, the file has "
                         f"{len(lines)}")
    head = lines[1].split()
    if len(head) < 2 + len(QM9_PROPERTIES) or head[0] != "gdb":
        raise InputError(f"{p} line 2: expected 'gdb N' and {len(QM9_PROPERTIES)} properties, got "
                         f"{len(head)} fields")
    try:
        index = int(head[1])
        props = {k: _float(v) for k, v in zip(QM9_PROPERTIES, head[2:], strict=False)}
    except ValueError:
        raise InputError(f"{p} line 2: cannot read the QM9 properties") from None
    numbers = np.empty(natm, dtype=np.int64)
    coords = np.empty((natm, 3))
    charges = np.empty(natm)
    for k in range(natm):
        ln = 2 + k
        tokens = lines[ln].split()
        z = atomic_number(tokens[0]) if tokens else None
        if len(tokens) != 5 or z is None:
            raise InputError(f"{p} line {ln + 1}: expected 'symbol x y z mulliken_charge', got "
                             f"'{lines[ln].strip()[:60]}'")
        try:
            coords[k] = [_float(t) for t in tokens[1:4]]
            charges[k] = _float(tokens[4])
        except ValueError:
            raise InputError(f"{p} line {ln + 1}: cannot read numbers from "
                             f"'{lines[ln].strip()[:60]}'") from None
        numbers[k] = z
    try:
        freqs = np.array([_float(t) for t in lines[2 + natm].split()])
    except ValueError:
        raise InputError(f"{p} line {natm + 3}: cannot read the frequencies") from None
    smiles = lines[3 + natm].split()
    inchi = lines[4 + natm].split()
    if len(smiles) != 2 or len(inchi) != 2:
        raise InputError(f"{p} lines {natm + 4}-{natm + 5}: expected two SMILES and two InChI")
    mol = Molecule.from_angstrom(numbers, coords, name=f"qm9_{index:06d}")
    if validate:
        validate_molecule(mol, source=p, atom_lines=list(range(3, 3 + natm)))
    return Qm9Record(mol, index, props, charges, freqs, smiles[0], smiles[1], inchi[0], inchi[1])


# ----------------------------------------------------------------------------------------- MD17


def read_md17_npz(path: PathLike, *, indices: Sequence[int] | slice | None = None,
                  validate: bool = True) -> list[Molecule]:
    """Frames of an MD17 / sGDML ``.npz`` file as Molecules with reference energies and forces.

    Keys: ``R`` (nframe, natm, 3) Angstrom, ``z`` (natm,), ``E`` (nframe,) or (nframe, 1) kcal/mol,
    ``F`` (nframe, natm, 3) kcal/mol/Angstrom (rMD17: ``coords``, ``nuclear_charges``, ``energies``,
    ``forces``). Converted to ``energy_ref`` in Hartree (E / 627.509...) and ``forces_ref`` in
    Ha/Bohr (F / 1185.82...; ``HA_PER_BOHR_TO_KCAL_PER_ANGSTROM``). ``E`` and ``F`` are optional.

    Args:
      path: the ``.npz`` file (MD17 ethanol has 555,092 frames; pick some with ``indices``).
      indices: frames to read (a slice or integer indices); all by default.
      validate: check the frames (vectorised over frames; the first bad one is named).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        data = np.load(p, allow_pickle=False)
        keys = set(data.files)
    except Exception as err:  # noqa: BLE001 - numpy raises several types for bad archives
        raise InputError(f"{p}: not a readable .npz archive ({type(err).__name__}: {err})")\
            from None
    names = {"R": "coords", "z": "nuclear_charges", "E": "energies", "F": "forces"}
    key = {k: (k if k in keys else alt if alt in keys else None) for k, alt in names.items()}
    if key["R"] is None or key["z"] is None:
        raise InputError(f"{p}: an MD17 file needs arrays 'R' and 'z' (or 'coords' and "
                         f"'nuclear_charges'); it has {sorted(keys)}")
    z = np.asarray(data[key["z"]]).astype(np.int64).reshape(-1)
    r_all = np.asarray(data[key["R"]], dtype=np.float64)
    if r_all.ndim == 2:
        r_all = r_all[None]
    if r_all.ndim != 3 or r_all.shape[1:] != (len(z), 3):
        raise InputError(f"{p}: '{key['R']}' has shape {r_all.shape}, expected "
                         f"(nframe, {len(z)}, 3) to match '{key['z']}'")
    nframe = r_all.shape[0]
    sel = np.arange(nframe)[indices] if indices is not None else np.arange(nframe)
    sel = np.atleast_1d(sel)
    coords = r_all[sel]
    energy = forces = None
    if key["E"] is not None:
        e = np.asarray(data[key["E"]], dtype=np.float64).reshape(nframe, -1)
        if e.shape[1] != 1:
            raise InputError(f"{p}: '{key['E']}' has shape {e.shape}, expected ({nframe},) or "
                             f"({nframe}, 1)")
        energy = e[sel, 0] * KCAL_TO_HARTREE
    if key["F"] is not None:
        f = np.asarray(data[key["F"]], dtype=np.float64)
        if f.shape != r_all.shape:
            raise InputError(f"{p}: '{key['F']}' has shape {f.shape}, expected {r_all.shape}")
        forces = f[sel] / HA_PER_BOHR_TO_KCAL_PER_ANGSTROM
    if validate:
        _validate_frames(z, coords, sel, str(p))
    stem = p.stem
    return [Molecule.from_angstrom(z, coords[k], name=f"{stem}-{int(sel[k])}",
                                   energy_ref=None if energy is None else float(energy[k]),
                                   forces_ref=None if forces is None else forces[k])
            for k in range(len(sel))]


def _validate_frames(z: np.ndarray, coords_angstrom: np.ndarray, frame_ids: np.ndarray,
                     where: str, chunk: int = 20000) -> None:
    """Validate many frames of one composition; vectorised, then the first bad frame is named by
    :func:`validate_molecule` (elements and charge are checked once)."""
    validate_molecule(Molecule.from_angstrom(z, coords_angstrom[0] if len(coords_angstrom) else
                                             np.zeros((len(z), 3))),
                      source=f"{where} frame {int(frame_ids[0]) if len(frame_ids) else 0}")
    iu, ju = np.triu_indices(len(z), k=1)
    for start in range(0, len(coords_angstrom), chunk):
        block = coords_angstrom[start:start + chunk]
        bad = ~np.isfinite(block).all(axis=(1, 2))
        if len(iu):
            dmin = np.linalg.norm(block[:, iu] - block[:, ju], axis=-1).min(axis=1)
            bad |= ~(dmin >= MIN_DISTANCE_ANGSTROM)
        if bad.any():
            k = start + int(np.flatnonzero(bad)[0])
            validate_molecule(Molecule.from_angstrom(z, coords_angstrom[k]),
                              source=f"{where} frame {int(frame_ids[k])}")


# ----------------------------------------------------------------------------------------- PDB


@dataclasses.dataclass(frozen=True)
class PdbAtom:
    """One ATOM/HETATM record (PDB v3.3 fixed columns)."""

    line: int
    name: str
    res_name: str
    chain: str
    res_seq: int
    number: int
    coords_angstrom: tuple[float, float, float]
    formal_charge: int


def read_pdb_atoms(path: PathLike) -> list[PdbAtom]:
    """ATOM/HETATM records of the first MODEL of a PDB file, with their line numbers.

    The element comes from columns 77-78, else from the atom name (columns 13-16, first letters
    without digits); the formal charge from columns 79-80 ('1+', '2-').
    """
    lines = _read_lines(path)
    p = str(path)
    atoms = []
    for n, line in enumerate(lines, start=1):
        rec = line[:6].strip()
        if rec == "ENDMDL":
            break
        if rec not in ("ATOM", "HETATM"):
            continue
        try:
            xyz = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
        except ValueError:
            raise InputError(f"{p} line {n}: cannot read coordinates from columns 31-54 of "
                             f"'{line.rstrip()[:80]}'") from None
        name = line[12:16].strip()
        sym = line[76:78].strip() if len(line) >= 77 else ""
        if not sym:
            sym = re.sub(r"[^A-Za-z]", "", line[12:14]) or re.sub(r"[^A-Za-z]", "", name)[:1]
        z = atomic_number(sym)
        if z is None and not line[76:78].strip():
            z = atomic_number(re.sub(r"[^A-Za-z]", "", name)[:1])
        if z is None:
            raise InputError(f"{p} line {n}: unknown element '{sym}' for atom '{name}'")
        charge_field = line[78:80].strip() if len(line) >= 79 else ""
        charge = 0
        if charge_field:
            m = re.fullmatch(r"(\d)([+-])|([+-])(\d)", charge_field)
            if m is None:
                raise InputError(f"{p} line {n}: cannot read the formal charge '{charge_field}' in "
                                 "columns 79-80")
            digit = int(m.group(1) or m.group(4))
            charge = digit if (m.group(2) or m.group(3)) == "+" else -digit
        try:
            res_seq = int(line[22:26])
        except ValueError:
            res_seq = 0
        atoms.append(PdbAtom(n, name, line[17:20].strip(), line[21:22], res_seq, z, xyz, charge))
    if not atoms:
        raise InputError(f"{p}: no ATOM or HETATM records")
    return atoms


def read_pdb(path: PathLike, *, add_hydrogens: bool = False, validate: bool = True,
             allow_charged: bool = False, allow_open_shell: bool = False) -> Molecule:
    """A molecule from a PDB file (first model, hydrogens kept, Angstrom -> Bohr).

    The total charge is the sum of the formal charges (columns 79-80) or, for a protein of standard
    residues with hydrogens, the protonation charge counted from its hydrogens
    (:func:`~mofdft_jax.molecules.proteins.protonation_charge_from_pdb_atoms`), so a charged
    protonation state is refused by validation instead of being computed as a neutral radical.

    A PDB without hydrogens raises InputError unless ``add_hydrogens=True``, which runs the protein
    pipeline (:func:`~mofdft_jax.molecules.proteins.protein_from_pdb`: PDBFixer, OpenMM hydrogens,
    neutral protonation).
    """
    atoms = read_pdb_atoms(path)
    p = str(path)
    numbers = np.array([a.number for a in atoms], dtype=np.int64)
    if add_hydrogens:
        from mofdft_jax.molecules.proteins import protein_from_pdb

        return protein_from_pdb(path)
    if not (numbers == 1).any():
        raise InputError(f"{p}: no hydrogen atoms; M-OFDFT needs all-atom structures (read it with "
                         "add_hydrogens=True to add them with OpenMM and neutralise)")
    charge = int(sum(a.formal_charge for a in atoms))
    if charge == 0:
        from mofdft_jax.molecules.proteins import protonation_charge_from_pdb_atoms

        counted = protonation_charge_from_pdb_atoms(atoms)
        charge = counted if counted is not None else 0
    coords = np.array([a.coords_angstrom for a in atoms])
    mol = Molecule.from_angstrom(numbers, coords, charge=charge, name=Path(path).stem)
    if validate:
        try:
            validate_molecule(mol, allow_charged=allow_charged, allow_open_shell=allow_open_shell,
                              source=p, atom_lines=[a.line for a in atoms])
        except InputError as err:
            hint = current_refusal_advice().pdb_charged
            if "total charge" in str(err) and hint:
                raise InputError(f"{err} ({hint})") from None
            raise
    return mol


# ----------------------------------------------------------------------------------------- SMILES


def read_smiles_file(path: PathLike, *, seed: int = 0, validate: bool = True) -> list[Molecule]:
    """Molecules from a ``.smi`` file: one ``SMILES [name]`` per line; '#' starts a comment."""
    from mofdft_jax.molecules.smiles import molecule_from_smiles

    out = []
    p = str(path)
    for n, line in enumerate(_read_lines(path), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split(maxsplit=1)
        name = parts[1] if len(parts) > 1 else f"{Path(path).stem}-{n}"
        out.append(molecule_from_smiles(parts[0], seed=seed, name=name, validate=validate,
                                        source=f"{p} line {n}"))
    if not out:
        raise InputError(f"{p}: no SMILES in the file")
    return out


# ----------------------------------------------------------------------------------------- dispatch


def read_molecules(source: PathLike, *, seed: int = 0, allow_charged: bool = False,
                   allow_open_shell: bool = False, add_hydrogens: bool = False,
                   validate: bool = True) -> list[Molecule]:
    """Molecules from a file or a SMILES string; what the CLI calls on its FILE argument.

    ``smiles:CCO`` -> one conformer (RDKit ETKDGv3 seeded with ``seed``, MMFF). Files by extension:
    ``.xyz`` / ``.extxyz`` (multi-frame; QM9 records detected by line 2), ``.pdb`` (hydrogens
    required unless ``add_hydrogens``, which runs the neutral protein pipeline), ``.npz`` (MD17),
    ``.smi`` (one SMILES per line). Each molecule is validated unless ``validate=False`` (then
    only the file's syntax is checked, e.g. before the caller sets the charge).
    """
    text = str(source)
    if text.startswith("smiles:"):
        from mofdft_jax.molecules.smiles import molecule_from_smiles

        return [molecule_from_smiles(text[len("smiles:"):].strip(), seed=seed,
                                     allow_charged=allow_charged,
                                     allow_open_shell=allow_open_shell, validate=validate)]
    path = Path(text)
    if not path.exists():
        hint = f" (for a SMILES string write smiles:{text})" if not path.suffix else ""
        raise InputError(f"{text}: no such file{hint}")
    ext = path.suffix.lower()
    flags = {"allow_charged": allow_charged, "allow_open_shell": allow_open_shell,
             "validate": validate}
    if ext in (".xyz", ".extxyz"):
        return read_xyz(path, **flags)
    if ext in (".pdb", ".ent"):
        return [read_pdb(path, add_hydrogens=add_hydrogens, **flags)]
    if ext == ".npz":
        return read_md17_npz(path, validate=validate)
    if ext in (".smi", ".smiles"):
        return read_smiles_file(path, seed=seed, validate=validate)
    raise InputError(f"{text}: unsupported file type '{ext or '(none)'}' (use .xyz, .pdb, .npz, "
                     ".smi or smiles:<SMILES>)")
