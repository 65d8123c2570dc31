"""Dataset recipes: which molecules, how many, which seed, which label settings, per preset.

A recipe is a TOML file (``datasets/<name>.toml``)::

    name = "ethanol_thermal"
    description = "Thermal (500 K) conformers of ethanol: conformational generalisation"
    card = "ethanol_thermal.md"          # dataset card next to the recipe
    default_preset = "quick"

    [source]                             # where the molecules come from (data/sources.py)
    kind = "thermal_conformers"
    smiles = "CCO"
    temperature_k = 500.0
    count = 1000
    seed = 0

    [labels]                             # LabelSettings overrides (qchem/labels.py); paper defaults
    grid_level = 2

    [splits]                             # data/splits.py
    fractions = [0.8, 0.1, 0.1]
    seed = 0
    group_by = "conformer_id"            # meta key; default: one group per shard

    [presets.quick]                      # merged over the tables above
    source = { count = 8 }
    labels = { basis = "6-31G", grid_level = 1 }

Preset tables are merged key by key into ``source``, ``labels`` and ``splits``; a preset whose
``source.kind`` differs from the base replaces the source table entirely (e.g. the ``paper`` preset of
ethanol reads the user's MD17 file instead of sampling). Relative paths in ``source`` are relative to
the recipe file; ``~`` and ``${VAR}`` are expanded.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

from mofdft_jax.data import shards
from mofdft_jax.data.generate import MoleculeTask
from mofdft_jax.molecules.molecule import InputError

#: Presets every shipped recipe defines (DESIGN "Scales").
PRESETS = ("quick", "cpu", "paper")
_TOP_KEYS = {"name", "description", "card", "default_preset", "source", "labels", "splits",
             "presets"}


def datasets_dir() -> Path:
    """The directory of the shipped recipes: ``$MOFDFT_DATASETS`` if set, else the repository's
    ``datasets/`` (recipes, SMILES lists, dataset cards)."""
    override = os.environ.get("MOFDFT_DATASETS")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "datasets"


def recipe_catalogue() -> list[dict]:
    """``{"name", "description", "presets", "default_preset"}`` of every shipped recipe
    (``datasets/*.toml``, sorted by name), read from the TOML alone: no molecule is built."""
    rows = []
    for path in sorted(datasets_dir().glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: invalid TOML ({exc})") from None
        rows.append({"name": path.stem, "description": str(raw.get("description", "")),
                     "presets": list(raw.get("presets", {})),
                     "default_preset": raw.get("default_preset")})
    return rows


def find_recipe(name_or_path: str | os.PathLike) -> Path:
    """Resolve a recipe argument: an existing path, else ``datasets/<name>.toml``."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    candidate = datasets_dir() / f"{Path(str(name_or_path)).stem}.toml"
    if candidate.is_file() and path.suffix in ("", ".toml") and path.parent == Path("."):
        return candidate
    known = sorted(p.stem for p in datasets_dir().glob("*.toml"))
    raise InputError(f"{name_or_path}: no such recipe file or shipped recipe "
                     f"(shipped: {', '.join(known)})")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A recipe resolved for one preset.

    Attributes:
      name: dataset name.
      path: the recipe file.
      preset: the preset applied (or None for the base tables).
      description: one line.
      card: path of the dataset card (Markdown), if any.
      source: molecule source parameters (``kind`` plus its options).
      labels: LabelSettings overrides.
      splits: split options (fractions, seed, group_by).
    """

    name: str
    path: Path
    preset: str | None
    description: str
    card: Path | None
    source: dict
    labels: dict
    splits: dict

    def label_settings(self):
        """The LabelSettings of this recipe: paper defaults with the recipe's overrides."""
        from mofdft_jax.qchem.labels import LabelSettings

        known = {f.name for f in dataclasses.fields(LabelSettings)}
        unknown = sorted(set(self.labels) - known)
        if unknown:
            raise InputError(f"{self.path}: [labels] unknown setting {unknown[0]!r} "
                             f"(known: {', '.join(sorted(known))})")
        return LabelSettings(**self.labels)

    def molecules(self) -> list[tuple[Any, dict]]:
        """``(Molecule, meta)`` pairs of the recipe, in a deterministic order."""
        from mofdft_jax.data.sources import load_source

        return load_source(self.source, base_dir=self.path.parent, recipe_path=self.path)

    def to_dict(self) -> dict:
        """JSON-able description stored in the dataset manifest."""
        return {"name": self.name, "path": str(self.path), "preset": self.preset,
                "description": self.description, "source": self.source, "labels": self.labels,
                "splits": self.splits}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe(name_or_path: str | os.PathLike, preset: str | None = None) -> Recipe:
    """Read a recipe and apply a preset (default: the recipe's ``default_preset``).

    Raises:
      InputError: missing file, TOML syntax error, unknown table or preset; names the file.
    """
    path = find_recipe(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML ({exc})") from None
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown top-level key {unknown[0]!r} "
                         f"(allowed: {', '.join(sorted(_TOP_KEYS))})")
    if "source" not in raw or "kind" not in raw["source"]:
        raise InputError(f"{path}: the recipe needs a [source] table with a 'kind'")
    presets = raw.get("presets", {})
    preset = preset if preset is not None else raw.get("default_preset")
    source, labels, splits = raw["source"], raw.get("labels", {}), raw.get("splits", {})
    if preset is not None:
        if preset not in presets:
            raise InputError(f"{path}: no preset {preset!r} (defined: "
                             f"{', '.join(presets) or 'none'})")
        over = presets[preset]
        bad = sorted(set(over) - {"source", "labels", "splits"})
        if bad:
            raise InputError(f"{path}: [presets.{preset}] may set source, labels, splits; "
                             f"not {bad[0]!r}")
        over_source = over.get("source", {})
        if "kind" in over_source and over_source["kind"] != source["kind"]:
            source = copy.deepcopy(over_source)
        else:
            source = _merge(source, over_source)
        labels = _merge(labels, over.get("labels", {}))
        splits = _merge(splits, over.get("splits", {}))
    card = raw.get("card")
    return Recipe(name=str(raw.get("name", path.stem)), path=path, preset=preset,
                  description=str(raw.get("description", "")),
                  card=(path.parent / card) if card else None, source=source, labels=labels,
                  splits=splits)


def recipe_tasks(recipe: Recipe) -> list[MoleculeTask]:
    """One :class:`MoleculeTask` per recipe molecule, with its shard file name."""
    tasks = []
    for index, (molecule, meta) in enumerate(recipe.molecules()):
        tasks.append(MoleculeTask(index=index, molecule=molecule, meta=dict(meta),
                                  file=shards.shard_file_name(index, molecule.name)))
    return tasks
