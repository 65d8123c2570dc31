"""On-disk dataset format: one HDF5 shard per molecule plus a ``manifest.json``.

Layout of a dataset directory::

    DIR/
      manifest.json          schema version, recipe, label settings, molecule list, completed shards
                             (file name, SHA-256, size, steps, wall time), failures with reasons
      000000_water.h5        one shard per molecule: the MoleculeLabels of that geometry
      000001_methane.h5
      .datagen.lock          held (flock) while a ``mofdft datagen`` run writes into DIR

Guarantees (spec §1.2, DESIGN "Where one machine is not enough"):

* A shard appears only once complete: it is written to a hidden temporary name in the same
  directory, flushed, ``fsync``-ed and renamed (an atomic operation on POSIX file systems). A killed
  run therefore leaves either a complete shard or an invisible ``.…tmp-…`` file, never a partial
  shard; the temporaries are removed by the next run.
* Shards are byte-identical for identical labels: no timestamps are written, attributes and groups
  are written in sorted order, and the wall time of the label computation (the one run-dependent
  field of :class:`~mofdft_jax.qchem.labels.MoleculeLabels`) is kept in the manifest, not the shard.
* Every shard carries the format name, the schema version and the label settings (JSON) so a shard
  copied into the wrong dataset, written by another schema or damaged is refused with an error that
  names the file (:class:`DatasetError`).

Shard contents mirror the fields of ``MoleculeLabels`` generically: arrays become datasets, dicts
become groups, Python scalars become 0-d datasets tagged with their type, the Molecule becomes a group
(``numbers``, ``coords_bohr``, charge/spin/name attributes). ``settings`` is stored as a sorted JSON
attribute, ``meta`` (the recipe's per-molecule metadata: source id, conformer id, isomer group) too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# remove_stale_temporaries is re-exported for the datasets (call it under the dataset lock only)
from mofdft_jax.atomic_io import (atomic_path, remove_stale_temporaries,  # noqa: F401
                                  write_text_atomic)
from mofdft_jax.molecules.molecule import InputError, Molecule

#: Version of the shard and manifest layout; bump when the layout changes incompatibly.
SCHEMA_VERSION = 2
SHARD_FORMAT = "mofdft_jax.shard"
DATASET_FORMAT = "mofdft_jax.dataset"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".datagen.lock"
#: Fields of MoleculeLabels that describe the run rather than the labels; kept in the manifest.
RUN_FIELDS = ("wall_s",)
#: Label settings that change resources, not results; ignored when settings are compared.
RUN_ONLY_SETTINGS = ("max_memory_mb",)

_SHARD_RE = re.compile(r"^(\d{6,})_[A-Za-z0-9._-]*\.h5$")


class DatasetError(InputError):
    """A dataset directory or shard that cannot be used: unreadable, foreign (other schema or
    settings), or inconsistent with its manifest. The message names the file."""


# ------------------------------------------------------------------------------------------------
# names and hashing


def shard_file_name(index: int, name: str) -> str:
    """Shard file name of molecule ``index`` of a recipe: ``{index:06d}_{name}.h5`` (name sanitised
    to ``[A-Za-z0-9._-]``, at most 60 characters)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(name))[:60].strip(".") or "molecule"
    return f"{int(index):06d}_{safe}.h5"


def is_shard_file_name(name: str) -> bool:
    """True for a complete shard's file name (temporaries are hidden and never match)."""
    return bool(_SHARD_RE.match(name))


def shard_index(name: str) -> int:
    """Molecule index encoded in a shard file name."""
    match = _SHARD_RE.match(name)
    if not match:
        raise DatasetError(f"{name}: not a shard file name")
    return int(match.group(1))


def canonical_json(obj: Any) -> str:
    """Sorted, compact JSON used for hashing and for the settings attribute of shards."""
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))


def settings_hash(settings: dict) -> str:
    """SHA-256 (hex, 16 characters) of the canonical JSON of a label-settings dict."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def settings_difference(expected: dict, found: dict) -> str:
    """One-line description of the first keys of ``expected`` whose value differs in ``found``
    (keys only in ``found`` — e.g. extra provenance written by the label code — are ignored)."""
    expected, found = _jsonable(expected), _jsonable(found)
    keys = sorted(k for k in expected if k not in RUN_ONLY_SETTINGS)
    diffs = [f"{k}: {found.get(k, '<missing>')!r} (expected {expected.get(k, '<missing>')!r})"
             for k in keys if expected.get(k, "<missing>") != found.get(k, "<missing>")]
    return "; ".join(diffs[:4]) + (" …" if len(diffs) > 4 else "")


# ------------------------------------------------------------------------------------------------
# writing


def _write_value(parent: h5py.Group, key: str, value: Any) -> None:
    """Write one field value under ``parent[key]`` with a ``kind`` tag for the exact round trip."""
    if "/" in key or not key:
        raise ValueError(f"shard key {key!r} cannot be stored (empty or contains '/')")
    if isinstance(value, Molecule):
        group = parent.create_group(key)
        group.attrs["kind"] = "molecule"
        group.attrs["charge"] = int(value.charge)
        group.attrs["spin"] = int(value.spin)
        group.attrs["name"] = str(value.name)
        group.create_dataset("numbers", data=np.asarray(value.numbers, dtype=np.int64))
        group.create_dataset("coords_bohr", data=np.asarray(value.coords_bohr, dtype=np.float64))
        if value.energy_ref is not None:
            _write_value(group, "energy_ref", float(value.energy_ref))
        if value.forces_ref is not None:
            _write_value(group, "forces_ref", np.asarray(value.forces_ref, dtype=np.float64))
    elif isinstance(value, dict):
        group = parent.create_group(key)
        group.attrs["kind"] = "dict"
        for sub_key in sorted(value):
            _write_value(group, str(sub_key), value[sub_key])
    elif isinstance(value, np.ndarray) or hasattr(value, "__array__") and not np.isscalar(value):
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError(f"shard field {key!r}: object arrays cannot be stored")
        dset = parent.create_dataset(key, data=array)
        dset.attrs["kind"] = "ndarray"
    elif isinstance(value, (bool, np.bool_)):
        parent.create_dataset(key, data=np.bool_(value)).attrs["kind"] = "bool"
    elif isinstance(value, (int, np.integer)):
        parent.create_dataset(key, data=np.int64(value)).attrs["kind"] = "int"
    elif isinstance(value, (float, np.floating)):
        parent.create_dataset(key, data=np.float64(value)).attrs["kind"] = "float"
    elif isinstance(value, str):
        parent.create_dataset(key, data=value).attrs["kind"] = "str"
    elif value is None:
        parent.create_dataset(key, data=h5py.Empty("f8")).attrs["kind"] = "none"
    else:
        raise TypeError(f"shard field {key!r}: cannot store a value of type {type(value).__name__}")


def labels_to_fields(labels: Any) -> dict[str, Any]:
    """Field dict of a MoleculeLabels-like dataclass (or of a plain dict)."""
    if isinstance(labels, dict):
        return dict(labels)
    if dataclasses.is_dataclass(labels):
        return {f.name: getattr(labels, f.name) for f in dataclasses.fields(labels)}
    raise TypeError(f"expected a MoleculeLabels dataclass, got {type(labels).__name__}")


def write_shard(path: str | os.PathLike, labels: Any, *, meta: dict | None = None) -> dict:
    """Write ``labels`` (a MoleculeLabels) as one shard, atomically.

    The file is first written to ``.<name>.tmp-<pid>-<random>`` in the target directory, flushed and
    ``fsync``-ed, then renamed onto ``path`` and the directory entry is ``fsync``-ed. Readers never
    see a partial shard. Fields listed in :data:`RUN_FIELDS` (``wall_s``) and resource settings
    (:data:`RUN_ONLY_SETTINGS`) are not written, so that equal labels give byte-identical shards.

    Args:
      path: final shard path (``DIR/{index:06d}_{name}.h5``).
      labels: the MoleculeLabels of one molecule.
      meta: recipe metadata of the molecule (JSON-serialisable), stored as an attribute.

    Returns:
      ``{"file", "sha256", "size_bytes", "n_steps"}`` of the written shard.
    """
    path = Path(path)
    fields = labels_to_fields(labels)
    settings = {k: v for k, v in fields.pop("settings", {}).items() if k not in RUN_ONLY_SETTINGS}
    for run_field in RUN_FIELDS:
        fields.pop(run_field, None)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["format"] = SHARD_FORMAT
            h5.attrs["schema_version"] = SCHEMA_VERSION
            h5.attrs["settings_json"] = canonical_json(settings)
            h5.attrs["settings_hash"] = settings_hash(settings)
            h5.attrs["meta_json"] = canonical_json(meta or {})
            h5.attrs["fields"] = json.dumps(list(fields))
            for key in sorted(fields):
                _write_value(h5, key, fields[key])
    return {"file": path.name, "sha256": file_sha256(path), "size_bytes": path.stat().st_size,
            "n_steps": int(fields.get("n_steps", 0))}


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (:mod:`mofdft_jax.atomic_io`)."""
    write_text_atomic(path, json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n")


# ------------------------------------------------------------------------------------------------
# reading


def _read_value(node: h5py.Group | h5py.Dataset) -> Any:
    kind = node.attrs.get("kind", "ndarray")
    if kind == "molecule":
        return Molecule(
            numbers=node["numbers"][()], coords_bohr=node["coords_bohr"][()],
            charge=int(node.attrs["charge"]), spin=int(node.attrs["spin"]),
            name=str(node.attrs["name"]),
            energy_ref=_read_value(node["energy_ref"]) if "energy_ref" in node else None,
            forces_ref=_read_value(node["forces_ref"]) if "forces_ref" in node else None)
    if kind == "dict":
        return {key: _read_value(node[key]) for key in node}
    if kind == "ndarray":
        return node[()]
    if kind == "bool":
        return bool(node[()])
    if kind == "int":
        return int(node[()])
    if kind == "float":
        return float(node[()])
    if kind == "str":
        value = node[()]
        return value.decode() if isinstance(value, bytes) else str(value)
    if kind == "none":
        return None
    raise ValueError(f"unknown field kind {kind!r} at {node.name}")


def _default_labels_cls():
    from mofdft_jax.qchem.labels import MoleculeLabels

    return MoleculeLabels


def read_shard_header(path: str | os.PathLike) -> dict:
    """Format, schema version, settings and meta of a shard, checked; raises DatasetError.

    Returns:
      ``{"settings": dict, "settings_hash": str, "meta": dict, "schema_version": int}``.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable HDF5 shard ({_short(exc)})") from None
    if attrs.get("format") != SHARD_FORMAT:
        raise DatasetError(f"{path}: foreign file, not a mofdft_jax shard "
                           f"(format attribute {attrs.get('format')!r})")
    version = int(attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise DatasetError(f"{path}: shard schema version {version}, this mofdft_jax reads "
                           f"version {SCHEMA_VERSION}; regenerate the dataset")
    try:
        settings = json.loads(attrs["settings_json"])
        meta = json.loads(attrs.get("meta_json", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: damaged shard header ({_short(exc)})") from None
    return {"settings": settings, "settings_hash": str(attrs.get("settings_hash", "")),
            "meta": meta, "schema_version": version}


def read_shard(path: str | os.PathLike, *, expected_settings: dict | None = None,
               wall_s: float = math.nan, labels_cls=None) -> Any:
    """Read one shard back into a MoleculeLabels (exact round trip of every stored field).

    Args:
      path: shard file.
      expected_settings: when given, the shard's label settings must equal them, otherwise a
        :class:`DatasetError` names the file and the differing keys.
      wall_s: value for the run field ``wall_s`` (the manifest's record; NaN when unknown).
      labels_cls: class to build (default :class:`mofdft_jax.qchem.labels.MoleculeLabels`).

    Raises:
      DatasetError: unreadable, truncated, foreign or other-settings shard; the message names it.
    """
    path = Path(path)
    header = read_shard_header(path)
    if expected_settings is not None:
        check_shard_settings(path, header["settings"], expected_settings)
    try:
        with h5py.File(path, "r") as h5:
            names = json.loads(h5.attrs["fields"])
            fields = {name: _read_value(h5[name]) for name in names}
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: damaged shard ({_short(exc)})") from None
    fields["settings"] = header["settings"]
    cls = labels_cls or _default_labels_cls()
    wanted = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else None
    if wanted is not None:
        if "wall_s" in wanted:
            fields["wall_s"] = float(wall_s)
        optional = {f.name for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING}  # e.g. curvature labels
        missing = wanted - set(fields) - optional
        if missing:
            raise DatasetError(f"{path}: shard lacks fields {sorted(missing)} of "
                               f"{cls.__name__}; regenerate the dataset")
        fields = {k: v for k, v in fields.items() if k in wanted}
    return cls(**fields)


def read_shard_meta(path: str | os.PathLike) -> dict:
    """Recipe metadata stored with a shard (source id, conformer id, isomer group …)."""
    return read_shard_header(path)["meta"]


def check_shard_settings(path: str | os.PathLike, found: dict, expected: dict) -> None:
    """Raise DatasetError naming ``path`` when a shard's settings differ from ``expected`` in any key
    of ``expected``."""
    diff = settings_difference(expected, found)
    if diff:
        raise DatasetError(f"{path}: shard made with different label settings ({diff})")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


# ------------------------------------------------------------------------------------------------
# manifest


def new_manifest(recipe: dict, settings: dict, molecules: list[dict]) -> dict:
    """Manifest of an empty dataset.

    Args:
      recipe: the resolved recipe (name, preset, source, labels) as a JSON-able dict.
      settings: the label settings dict every shard must carry.
      molecules: one entry per recipe molecule, ``{"index", "name", "formula", "natm", "file",
        "meta"}``, in recipe order.
    """
    return {
        "format": DATASET_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "recipe": _jsonable(recipe),
        "label_settings": _jsonable(settings),
        "settings_hash": settings_hash(settings),
        "molecules_fingerprint": molecules_fingerprint(molecules),
        "molecules": _jsonable(molecules),
        "shards": {},
        "failures": {},
    }


def molecules_fingerprint(molecules: list[dict]) -> str:
    """SHA-256 (16 hex) of the recipe's molecule list (names, files, geometry hashes)."""
    keys = [(m["index"], m["file"], m.get("geometry_sha256", "")) for m in molecules]
    return hashlib.sha256(canonical_json(keys).encode()).hexdigest()[:16]


def geometry_sha256(molecule: Molecule) -> str:
    """SHA-256 (16 hex) of a molecule's elements, coordinates, charge and spin."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(molecule.numbers, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(molecule.coords_bohr, dtype=np.float64).tobytes())
    digest.update(f"{int(molecule.charge)},{int(molecule.spin)}".encode())
    return digest.hexdigest()[:16]


def read_manifest(directory: str | os.PathLike) -> dict:
    """Load and check ``DIR/manifest.json``; raises DatasetError naming it when unusable."""
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        raise DatasetError(f"{path}: no manifest; {Path(directory)} is not a mofdft_jax dataset "
                           "(run `mofdft datagen RECIPE --out DIR` first)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable manifest ({_short(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{path}: foreign manifest (format "
                           f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(f"{path}: schema version {manifest.get('schema_version')}, this "
                           f"mofdft_jax reads version {SCHEMA_VERSION}; regenerate the dataset")
    return manifest


def check_manifest_compatible(manifest: dict, settings: dict, molecules: list[dict],
                              path: str | os.PathLike) -> None:
    """Refuse to extend a dataset made with other label settings or another molecule list."""
    diff = (settings_difference(settings, manifest["label_settings"])
            or settings_difference(manifest["label_settings"], settings))
    if diff:
        raise DatasetError(f"{path}: dataset was made with different label settings ({diff}); "
                           "use a new --out directory")
    if manifest.get("molecules_fingerprint") != molecules_fingerprint(molecules):
        raise DatasetError(f"{path}: dataset was made from a different molecule list (recipe, "
                           "preset or seed changed); use a new --out directory")


def verify_dataset(directory: str | os.PathLike) -> dict:
    """Check every shard listed in the manifest against its SHA-256 and header.

    Returns ``{"shards": n, "bytes": total}``; raises DatasetError naming the first bad shard.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    total = 0
    for entry in manifest["shards"].values():
        path = directory / entry["file"]
        if not path.exists():
            raise DatasetError(f"{path}: listed in the manifest but missing")
        header = read_shard_header(path)
        check_shard_settings(path, header["settings"], manifest["label_settings"])
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise DatasetError(f"{path}: checksum mismatch (file {digest[:12]}…, manifest "
                               f"{entry['sha256'][:12]}…); the shard is corrupt")
        total += path.stat().st_size
    return {"shards": len(manifest["shards"]), "bytes": total}
