"""Molecule sources of dataset recipes: ``[source] kind = ...`` → ordered ``(Molecule, meta)`` pairs.

Every source is deterministic: the same parameters (including ``seed``) give the same molecules in
the same order, so shard names and contents do not depend on when or where a recipe is run. ``meta``
is a small JSON-able dict stored with each shard (source id, conformer id, isomer group, heavy-atom
count …); :mod:`~mofdft_jax.data.splits` can group by any of its keys.

=======================  ==========================================================================
kind                     parameters
=======================  ==========================================================================
``inline``               ``molecules = [{name, xyz}]`` (xyz lines "El x y z", Angstrom)
``xyz``                  ``path`` (single or multi-frame xyz), optional ``count``, ``seed``
``smiles_list``          ``path`` (CSV with ``name,smiles[,isomer_group,...]``), optional
                         ``count``, ``seed``, ``max_heavy``, ``names``, ``min_isomers``
``thermal_conformers``   ``smiles`` (or ``xyz``), ``count``, ``temperature_k``, ``seed``, ``name``
``size_series``          ``path`` (CSV with ``name,smiles,family``), ``max_heavy``, ``families``
``md17_npz``             ``path`` (user-downloaded MD17 ``.npz``), ``count``, ``seed``
``qm9``                  ``path`` (directory of QM9 ``.xyz`` or ``dsgdb9nsd.xyz.tar.bz2``),
                         ``count``, ``seed``, optional ``formula`` (e.g. ``"C7H10O2"``)
``qmugs``                ``path`` (directory or tarball of QMugs ``.sdf``), ``min_heavy``,
                         ``max_heavy``, ``bin_width``, ``per_bin``, ``seed``
``chignolin_fragments``  options of :func:`mofdft_jax.molecules.chignolin_fragments`
``protein``              ``names`` (``"2WXC"``, ``"1PRB"``) or ``pdb`` paths
=======================  ==========================================================================

``count`` with ``seed`` draws a seeded random subset (without replacement) and keeps it in source
order. Nothing is ever downloaded: the user-data loaders name the file they need and where to get
it.
"""

from __future__ import annotations

import csv
import io
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mofdft_jax.molecules.molecule import InputError, Molecule
from mofdft_jax.units import SYMBOL_TO_Z

#: Where to obtain the user-downloaded data sets of the paper preset.
DOWNLOADS = {
    "md17_npz": "MD17 ethanol: http://www.sgdml.org/#datasets (file md17_ethanol.npz, keys R z E "
                "F; the paper uses the original MD17 set, 555k frames at 500 K)",
    "qm9": "QM9: https://doi.org/10.6084/m9.figshare.c.978904.v5 (dsgdb9nsd.xyz.tar.bz2, 134k "
           "extended-xyz files; CC0)",
    "qmugs": "QMugs: https://doi.org/10.3929/ethz-b-000482129 (structures.tar.gz with "
             "CHEMBL*/conf_*.sdf and summary.csv; CC BY 4.0)",
}

SourceFn = Callable[[dict, Path], list[tuple[Molecule, dict]]]
_SOURCES: dict[str, SourceFn] = {}


def register_source(kind: str) -> Callable[[SourceFn], SourceFn]:
    """Decorator registering a source function ``(params, base_dir) -> [(Molecule, meta)]``."""

    def wrap(fn: SourceFn) -> SourceFn:
        _SOURCES[kind] = fn
        return fn

    return wrap


def source_kinds() -> list[str]:
    """Registered source kinds."""
    return sorted(_SOURCES)


def load_source(params: dict, *, base_dir: Path, recipe_path: Path | None = None
                ) -> list[tuple[Molecule, dict]]:
    """Molecules of a recipe's ``[source]`` table, in deterministic order.

    Raises:
      InputError: unknown kind, missing parameter or file, invalid molecule; names the recipe.
    """
    kind = params.get("kind")
    where = recipe_path or base_dir
    if kind not in _SOURCES:
        raise InputError(f"{where}: [source] unknown kind {kind!r} (known: "
                         f"{', '.join(source_kinds())})")
    try:
        out = _SOURCES[kind](dict(params), Path(base_dir))
    except KeyError as exc:
        raise InputError(f"{where}: [source] kind {kind!r} needs parameter {exc.args[0]!r}"
                         ) from None
    if not out:
        raise InputError(f"{where}: [source] produced no molecules")
    seen_names: set[str] = set()
    seen_geometries: dict[str, str] = {}
    for mol, _ in out:
        if mol.name in seen_names:
            raise InputError(f"{where}: molecule name {mol.name!r} appears twice; names must be "
                             "unique")
        seen_names.add(mol.name)
        key = geometry_key(mol)
        if key in seen_geometries:
            raise InputError(f"{where}: molecules {seen_geometries[key]!r} and {mol.name!r} have "
                             "identical geometries (duplicate labels)")
        seen_geometries[key] = mol.name
    return out


def geometry_key(mol: Molecule) -> str:
    """Hash of elements, coordinates, charge and spin (duplicate detection)."""
    from mofdft_jax.data.shards import geometry_sha256

    return geometry_sha256(mol)


# ------------------------------------------------------------------------------------------------
# helpers


def resolve_path(value: str, base_dir: Path) -> Path:
    """``~``/``${VAR}`` expansion; relative paths are relative to the recipe's directory."""
    expanded = os.path.expandvars(os.path.expanduser(str(value)))
    if "$" in expanded:
        raise InputError(f"{value}: environment variable not set")
    path = Path(expanded)
    return path if path.is_absolute() else (base_dir / path)


def require_user_file(value: str, base_dir: Path, kind: str) -> Path:
    """A user-downloaded file or directory; a missing one gives an InputError saying where to get
    it."""
    path = resolve_path(value, base_dir)
    if not path.exists():
        raise InputError(f"{path}: not found. {DOWNLOADS[kind]}")
    return path


def seeded_subset(n: int, count: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of ``range(n)`` of size ``count`` (all when None),
    sorted so that the source order is kept."""
    if count is None or count >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(count), replace=False))


def parse_inline_xyz(text: str, name: str, where: str) -> Molecule:
    """Molecule from lines ``El x y z`` in Angstrom (inline recipe geometries)."""
    numbers, coords = [], []
    for lineno, line in enumerate(text.strip().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise InputError(f"{where}: molecule {name!r} line {lineno}: expected 'El x y z', got "
                             f"{line.strip()!r}")
        symbol = parts[0][:1].upper() + parts[0][1:].lower()
        if symbol not in SYMBOL_TO_Z:
            raise InputError(f"{where}: molecule {name!r} line {lineno}: element {parts[0]!r} is "
                             "not supported (M-OFDFT covers H, C, N, O, F)")
        try:
            xyz = [float(v) for v in parts[1:]]
        except ValueError:
            raise InputError(f"{where}: molecule {name!r} line {lineno}: bad coordinate in "
                             f"{line.strip()!r}") from None
        numbers.append(SYMBOL_TO_Z[symbol])
        coords.append(xyz)
    if not numbers:
        raise InputError(f"{where}: molecule {name!r} has no atoms")
    return Molecule.from_angstrom(np.array(numbers), np.array(coords), name=name)


def read_csv_rows(path: Path) -> list[dict]:
    """Rows of a CSV file (``#`` comment lines skipped)."""
    with open(path, newline="") as fh:
        lines = [line for line in fh if line.strip() and not line.lstrip().startswith("#")]
    return list(csv.DictReader(io.StringIO("".join(lines))))


def _validate(mol: Molecule, source: str) -> Molecule:
    from mofdft_jax.molecules.validate import validate_molecule

    return validate_molecule(mol, source=source)


def heavy_atom_count_smiles(smiles: str) -> int:
    """Number of heavy atoms of a SMILES (RDKit)."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InputError(f"{smiles!r}: RDKit cannot parse this SMILES")
    return mol.GetNumHeavyAtoms()


# ------------------------------------------------------------------------------------------------
# sources


@register_source("inline")
def _inline(params: dict, base_dir: Path) -> list[tuple[Molecule, dict]]:
    out = []
    for i, entry in enumerate(params["molecules"]):
        name = str(entry.get("name", f"molecule{i}"))
        mol = parse_inline_xyz(entry["xyz"], name, str(base_dir))
        out.append((_validate(mol, f"inline molecule {name!r}"), {"source_id": name}))
    return out


@register_source("xyz")
def _xyz(params: dict, base_dir: Path) -> list[tuple[Molecule, dict]]:
    from mofdft_jax.molecules.io import read_xyz

    path = resolve_path(params["path"], base_dir)
    frames = read_xyz(path)
    keep = seeded_subset(len(frames), params.get("count"), int(params.get("seed", 0)))
    stem = params.get("name", path.stem)
    out = []
    for i in keep:
        mol = frames[int(i)]
        name = f"{stem}_{int(i):06d}" if len(frames) > 1 else stem
        out.append((Molecule(mol.numbers, mol.coords_bohr, mol.charge, mol.spin, name),
                    {"source_id": f"{path.name}#{int(i)}", "frame": int(i)}))
    return out


@register_source("smiles_list")
def _smiles_list(params: dict, base_dir: Path) -> list[tuple[Molecule, dict]]:
    from mofdft_jax.molecules.smiles import molecule_from_smiles

    path = resolve_path(params["path"], base_dir)
    rows = read_csv_rows(path)
    if params.get("names"):
        wanted = set(params["names"])
        rows = [r for r in rows if r["name"] in wanted]
    if params.get("max_heavy") is not None:
        rows = [r for r in rows if heavy_atom_count_smiles(r["smiles"]) <= int(params["max_heavy"])]
    if params.get("min_isomers"):
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.get("isomer_group", "")] = counts.get(r.get("isomer_group", ""), 0) + 1
        rows = [r for r in rows if counts[r.get("isomer_group", "")] >= int(params["min_isomers"])]
    seed = int(params.get("seed", 0))
    keep = seeded_subset(len(rows), params.get("count"), seed)
    out = []
    for i in keep:
        row = rows[int(i)]
        mol = molecule_from_smiles(row["smiles"], name=row["name"], seed=seed,
                                   source=f"{path} ({row['name']})")
        meta = {"source_id": row["name"], "smiles": row["smiles"]}
        meta.update({k: v for k, v in row.items() if k not in ("name", "smiles") and v})
        meta["n_heavy"] = mol.n_heavy
        out.append((mol, meta))
    return out


@register_source("size_series")
def _size_series(params: dict, base_dir: Path) -> list[tuple[Molecule, dict]]:
    from mofdft_jax.molecules.smiles import molecule_from_smiles

    rows = read_csv_rows(resolve_path(params["path"], base_dir))
    families = params.get("families")
    if families:
        rows = [r for r in rows if r["family"] in set(families)]
    max_heavy = params.get("max_heavy")
    min_heavy = int(params.get("min_heavy", 0))
    seed = int(params.get("seed", 0))
    out = []
    for row in rows:
        n_heavy = heavy_atom_count_smiles(row["smiles"])
        if n_heavy < min_heavy or (max_heavy is not None and n_heavy > int(max_heavy)):
            continue
        mol = molecule_from_smiles(row["smiles"], name=row["name"], seed=seed)
        out.append((mol, {"source_id": row["name"], "smiles": row["smiles"],
                          "family": row["family"], "n_heavy": n_heavy}))
    return out


@register_source("thermal_conformers")
def _thermal(params: dict, base_dir: Path) -> list[tuple[Molecule, dict]]:
    from mofdft_jax.molecules import sample_thermal_conformers
    from mofdft_jax.molecules.io import read_xyz
    from mofdft_jax.molecules.smiles import molecule_from_smiles

    seed = int(params.get("seed", 0))
    name = str(params.get("name", "molecule"))
    if "xyz" in params:
        mol0 = read_xyz(resolve_path(params["xyz"], base_dir))[0]
    else:
        mol0 = molecule_from_smiles(params["smiles"], name=name, seed=seed)
    count = int(params["count"])
    temperature = float(params.get("temperature_k", 300.0))
    confs = sample_thermal_conformers(mol0, count, temperature_k=temperature, seed=seed)
    out = []
    for i, mol in enumerate(confs):
        out.append((Molecule(mol.numbers, mol.coords_bohr, mol.charge, mol.spin,
                             f"{name}_{i:06d}"),
                    {"source_id": name, "conformer_id": i, "temperature_k": temperature}))
    if params.get("include_minimum", False):
        out.insert(0, (Molecule(mol0.numbers, mol0.coords_bohr, mol0.charge, mol0.spin,
                                f"{name}_minimum"),
                       {"source_id": name, "conformer_id": -1, "temperature_k": 0.0}))
    return out


@register_source("md17_npz")
def _md17(params: dict, base_dir: Path) -> list[tuple[Molecule, dict]]:
    from mofdft_jax.molecules.io import read_md17_npz

    path = require_user_file(params["path"], base_dir, "md17_npz")
    keep = seeded_subset(npz_frame_count(path), params.get("count"), int(params.get("seed", 0)))
    frames = read_md17_npz(path, indices=keep)
    stem = params.get("name", path.stem)
    out = []
    for i, mol in zip(keep, frames, strict=True):
        out.append((Molecule(mol.numbers, mol.coords_bohr, mol.charge, mol.spin,
                             f"{stem}_{int(i):06d}", energy_ref=mol.energy_ref,
                             forces_ref=mol.forces_ref),
                    {"source_id": f"{path.name}#{int(i)}", "conformer_id": int(i)}))
    return out


def npz_frame_count(path: Path) -> int:
    """Number of frames of an MD17 ``.npz`` (from the ``R``/``coords`` array header only; the
    555k-frame ethanol file is not loaded)."""
    try:
        with zipfile.ZipFile(path) as zf:
            for key in ("R.npy", "coords.npy"):
                if key in zf.namelist():
                    with zf.open(key) as fh:
                        version = np.lib.format.read_magic(fh)
                        if version == (1, 0):
                            shape = np.lib.format.read_array_header_1_0(fh)[0]
                        else:
                            shape = np.lib.format.read_array_header_2_0(fh)[0]
                    return int(shape[0]) if len(shape) == 3 else 1
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({exc})") from None
    raise InputError(f"{path}: an MD17 file needs an array 'R' (or 'coords')")


def _qm9_files(path: Path):
    """Paths of every QM9 xyz file of a directory or a tarball (extracted one at a time to a
    temporary directory), sorted by name."""
    if path.is_dir():
        yield from sorted(path.glob("*.xyz"))
        return
    try:
        tar = tarfile.open(path)
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{path}: not a readable tar archive ({exc})") from None
    with tar, tempfile.TemporaryDirectory() as tmp:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xyz")),
                         key=lambda m: m.name)
        for member in members:
            file = Path(tmp) / Path(member.name).name
            file.write_bytes(tar.extractfile(member).read())
            yield file
            file.unlink()


@register_source("qm9")
def _qm9(params: dict, base_dir: Path) -> list[tuple[Molecule, dict]]:
    from mofdft_jax.molecules.io import read_qm9_xyz

    path = require_user_file(params["path"], base_dir, "qm9")
    formula = params.get("formula")
    mols = []
    for file in _qm9_files(path):
        mol = read_qm9_xyz(file).molecule
        if formula is None or mol.formula == formula:
            mols.append((mol, file.name))
    if not mols:
        raise InputError(f"{path}: no QM9 molecule{' with formula ' + formula if formula else ''}")
    keep = seeded_subset(len(mols), params.get("count"), int(params.get("seed", 0)))
    return [(mols[int(i)][0], {"source_id": mols[int(i)][1], "isomer_group": mols[int(i)][0].formula,
                               "n_heavy": mols[int(i)][0].n_heavy}) for i in keep]


def read_qmugs_sdf(text: str, name: str) -> Molecule:
    """Molecule (with hydrogens) from the text of one QMugs conformer ``.sdf`` (RDKit)."""
    from rdkit import Chem

    supplier = Chem.SDMolSupplier()
    supplier.SetData(text, removeHs=False, sanitize=False)
    rdmol = next(iter(supplier), None)
    if rdmol is None or rdmol.GetNumConformers() == 0:
        raise InputError(f"{name}: not a readable SDF molecule with coordinates")
    numbers = np.array([a.GetAtomicNum() for a in rdmol.GetAtoms()])
    coords = rdmol.GetConformer().GetPositions()
    charge = sum(a.GetFormalCharge() for a in rdmol.GetAtoms())
    return _validate(Molecule.from_angstrom(numbers, coords, charge=charge, name=name), name)


def _qmugs_members(path: Path):
    if path.is_dir():
        for file in sorted(path.rglob("*.sdf")):
            yield str(file.relative_to(path)), file.read_text()
        return
    with tarfile.open(path) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".sdf")),
                         key=lambda m: m.name)
        for member in members:
            yield member.name, tar.extractfile(member).read().decode()


def qmugs_bin(n_heavy: int, first_bin_max: int = 15, bin_width: int = 5) -> str:
    """Heavy-atom bin label of the paper's QMugs protocol (spec §1.2): one first bin up to
    ``first_bin_max`` (10-15), then bins of ``bin_width`` (16-20, 21-25, ...)."""
    if n_heavy <= first_bin_max:
        return f"<={first_bin_max}"
    lo = first_bin_max + 1 + (n_heavy - first_bin_max - 1) // bin_width * bin_width
    return f"{lo}-{lo + bin_width - 1}"


@register_source("qmugs")
def _qmugs(params: dict, base_dir: Path) -> list[tuple[Molecule, dict]]:
    """QMugs conformers binned by heavy-atom count (spec §1.2: first bin 10-15, then bins of 5,
    50 structures per test bin). Molecules with other elements (S, Cl, ...) or a net charge are
    skipped: M-OFDFT covers neutral H/C/N/O/F molecules."""
    path = require_user_file(params["path"], base_dir, "qmugs")
    min_heavy = int(params.get("min_heavy", 10))
    max_heavy = int(params.get("max_heavy", 100))
    first_bin_max = int(params.get("first_bin_max", 15))
    width = int(params.get("bin_width", 5))
    per_bin = params.get("per_bin")
    conformer = params.get("conformer", "conf_00")
    bins: dict[str, list[tuple[Molecule, dict]]] = {}
    for member, text in _qmugs_members(path):
        if conformer and Path(member).stem != conformer:
            continue
        name = member.replace("/", "_").removesuffix(".sdf")
        try:
            mol = read_qmugs_sdf(text, name)
        except InputError:
            continue
        if not (min_heavy <= mol.n_heavy <= max_heavy) or mol.charge != 0:
            continue
        label = qmugs_bin(mol.n_heavy, first_bin_max, width)
        bins.setdefault(label, []).append((mol, {"source_id": member, "n_heavy": mol.n_heavy,
                                                 "heavy_bin": label}))
    out = []
    seed = int(params.get("seed", 0))
    for k, label in enumerate(sorted(bins, key=lambda b: min(m.n_heavy for m, _ in bins[b]))):
        members = bins[label]
        keep = seeded_subset(len(members), per_bin, seed + k)
        out.extend(members[int(i)] for i in keep)
    return out


@register_source("chignolin_fragments")
def _chignolin_fragments(params: dict, base_dir: Path) -> list[tuple[Molecule, dict]]:
    """Contiguous chignolin fragments (spec §1.2: 2-5 residues, H-capped), several structures each.

    Parameters: ``lengths`` (default [2, 3, 4, 5]), ``termini`` ("hcap" as the paper, "capped",
    "neutral"), ``conformers`` per fragment: the ETKDG + MMFF minimum (conformer 0) and
    ``conformers - 1`` thermal structures around it at ``temperature_k`` (default 340 K, the
    temperature of the chignolin simulations; ``molecules.sample_thermal_conformers``), ``max_atoms``
    (drop fragments KS cannot label on this machine), ``unique`` (default true: a repeated sequence
    is built once), ``seed``.
    """
    from mofdft_jax.molecules import sample_thermal_conformers
    from mofdft_jax.molecules.peptides import CHIGNOLIN_SEQUENCE, peptide_molecule

    lengths = [int(n) for n in params.get("lengths", [2, 3, 4, 5])]
    termini = str(params.get("termini", "hcap"))
    n_conf = int(params.get("conformers", 1))
    temperature = float(params.get("temperature_k", 340.0))
    seed = int(params.get("seed", 0))
    max_atoms = params.get("max_atoms")
    unique = bool(params.get("unique", True))
    out, seen = [], set()
    for length in lengths:
        for start in range(len(CHIGNOLIN_SEQUENCE) - length + 1):
            seq = CHIGNOLIN_SEQUENCE[start:start + length]
            if unique and seq in seen:
                continue
            seen.add(seq)
            base = peptide_molecule(seq, termini=termini, seed=seed)
            if max_atoms is not None and base.natm > int(max_atoms):
                continue
            structures = [base]
            if n_conf > 1:
                structures += sample_thermal_conformers(base, n_conf - 1, temperature_k=temperature,
                                                        seed=seed + start, optimize=False)
            for c, mol in enumerate(structures):
                out.append((Molecule(mol.numbers, mol.coords_bohr, mol.charge, mol.spin,
                                     f"chignolin-f{start}-{seq}-c{c}"),
                            {"source_id": f"chignolin[{start}:{start + length}]", "fragment": seq,
                             "length": length, "conformer_id": c, "termini": termini,
                             "temperature_k": 0.0 if c == 0 else temperature}))
    return out


@register_source("protein")
def _protein(params: dict, base_dir: Path) -> list[tuple[Molecule, dict]]:
    """The paper's timing proteins (spec §1.2): ``names`` ("2WXC", "1PRB"), built from sequence,
    or from ``<pdb_dir>/<key>.pdb`` when the user supplies the structures; plus any ``pdb`` files.
    """
    from mofdft_jax.molecules.proteins import (build_paper_protein, find_protein_spec,
                                               protein_from_pdb)

    seed = int(params.get("seed", 0))
    pdb_dir = resolve_path(params["pdb_dir"], base_dir) if params.get("pdb_dir") else None
    out = []
    for name in params.get("names", []):
        spec = find_protein_spec(name)
        pdb = pdb_dir / f"{spec.key}.pdb" if pdb_dir is not None else None
        if pdb is not None and pdb.exists():
            mol = build_paper_protein(name, pdb_path=pdb, seed=seed)
        else:
            mol = build_paper_protein(name, seed=seed)
        out.append((mol, {"source_id": spec.key, "built_from": "pdb" if pdb is not None and
                          pdb.exists() else "sequence"}))
    for pdb in params.get("pdb", []):
        mol = protein_from_pdb(resolve_path(pdb, base_dir), seed=seed)
        out.append((mol, {"source_id": str(pdb), "built_from": "pdb"}))
    return out
