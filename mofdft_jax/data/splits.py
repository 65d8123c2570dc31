"""Train / validation / test splits that are deterministic from a seed and never leak a molecule.

Spec §1.2: ethanol and QM9 are split at random 8:1:1, the QMugs extrapolation train/val 9:1, the
chignolin fragments 9:1. The unit of splitting is a *group*: by default one shard, i.e. one geometry
with all its labelled SCF steps, so the steps of one geometry never straddle two splits (a conformer
set is thereby split by conformer id). ``group_by`` names a metadata key of the shards to group
coarser (e.g. all fragments cut from one parent structure).

Assignment: the sorted unique group keys are permuted with ``numpy.random.default_rng(seed)``; the
split sizes are ``floor(f·n)`` plus the remainders distributed by largest fractional part, and every
split with a positive fraction receives at least one group when there are enough groups.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mofdft_jax.molecules.molecule import InputError
from mofdft_jax.units import SYMBOL_TO_Z

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Sizes of the splits of ``n`` groups: largest-remainder rounding of ``f·n``, at least one
    group for each positive fraction when ``n`` allows it."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if np.any(fractions < 0) or fractions.sum() <= 0:
        raise InputError(f"split fractions {fractions.tolist()} must be >= 0 with a positive sum")
    fractions = fractions / fractions.sum()
    raw = fractions * n
    sizes = np.floor(raw).astype(int)
    order = np.argsort(-(raw - sizes), kind="stable")
    for i in order[: n - sizes.sum()]:
        sizes[i] += 1
    positive = np.flatnonzero(fractions > 0)
    if n >= len(positive):
        for i in positive:
            if sizes[i] == 0:
                donor = int(np.argmax(sizes))
                sizes[donor] -= 1
                sizes[i] += 1
    return sizes.tolist()


def split_groups(keys: Sequence[str], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 seed: int = 0, names: Sequence[str] = SPLIT_NAMES) -> dict[str, list[int]]:
    """Assign items to splits so that all items sharing a key land in the same split.

    Args:
      keys: ``(n_items,)`` group key of every item (shard file, conformer id, parent structure …).
      fractions: relative split sizes, counted in groups.
      seed: permutation seed.
      names: split names, one per fraction.

    Returns:
      ``{name: sorted item indices}``.
    """
    if len(names) != len(fractions):
        raise InputError(f"{len(fractions)} split fractions for {len(names)} split names")
    keys = [str(k) for k in keys]
    unique = sorted(set(keys))
    perm = np.random.default_rng(int(seed)).permutation(len(unique))
    sizes = split_sizes(len(unique), fractions)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    group_split = {}
    for s, name in enumerate(names):
        for g in perm[bounds[s]:bounds[s + 1]]:
            group_split[unique[int(g)]] = name
    out: dict[str, list[int]] = {name: [] for name in names}
    for i, key in enumerate(keys):
        out[group_split[key]].append(i)
    return out


def make_splits(dataset, fractions: Sequence[float] | None = None, seed: int | None = None,
                group_by: str | None = None, names: Sequence[str] = SPLIT_NAMES
                ) -> dict[str, list[str]]:
    """Split the completed shards of a dataset; defaults come from the recipe's ``[splits]``.

    Args:
      dataset: a :class:`~mofdft_jax.data.loader.Dataset` (or a dataset directory).
      fractions, seed, group_by: override the recipe's ``[splits]`` table (defaults 8:1:1, seed 0,
        one group per shard).

    Returns:
      ``{"train": [shard files], "val": [...], "test": [...]}``, each sorted.
    """
    from mofdft_jax.data.loader import Dataset, open_dataset

    if not isinstance(dataset, Dataset):
        dataset = open_dataset(dataset)
    recipe_splits = dataset.manifest.get("recipe", {}).get("splits", {})
    fractions = tuple(fractions if fractions is not None
                      else recipe_splits.get("fractions", DEFAULT_FRACTIONS))
    seed = int(seed if seed is not None else recipe_splits.get("seed", 0))
    group_by = group_by if group_by is not None else recipe_splits.get("group_by")
    if len(names) != len(fractions):
        names = SPLIT_NAMES[: len(fractions)] if len(fractions) <= 3 else \
            tuple(f"split{i}" for i in range(len(fractions)))
    files = dataset.files
    if group_by:
        missing = [f for f in files if group_by not in dataset.meta(f)]
        if missing:
            raise InputError(f"{dataset.directory / missing[0]}: no metadata key {group_by!r} to "
                             "group the splits by")
        keys = [json.dumps(dataset.meta(f)[group_by]) for f in files]
    else:
        keys = files
    index = split_groups(keys, fractions, seed, names)
    return {name: [files[i] for i in idx] for name, idx in index.items()}


def check_split_elements(dataset, splits: dict[str, list[str]],
                         held_out: Sequence[str] = ("val",), reference: str = "train",
                         override: str | None = None) -> None:
    """Refuse splits whose held-out molecules hold elements absent from the training split.

    A learned functional's adapter has no statistics, and its network no training signal, for an
    element it never saw: its energies there are arbitrary (validation losses of ~1e12), so such a
    split is an :class:`InputError` naming the elements, the split and an example molecule. Only
    the manifest's formulas are read (no labels).

    Args:
      dataset: a :class:`~mofdft_jax.data.loader.Dataset` (or a dataset directory).
      splits: ``{name: shard files}`` as from :func:`make_splits`.
      held_out: the splits to check (e.g. ``("val",)``, or ``("val", "test")`` before testing).
      reference: the training split.
      override: the option that skips this check, named at the end of the message.
    """
    from mofdft_jax.data.loader import Dataset, open_dataset

    if not isinstance(dataset, Dataset):
        dataset = open_dataset(dataset)
    seen = set().union(*(dataset.elements(f) for f in splits.get(reference, [])))
    for name in held_out:
        files = splits.get(name, [])
        unseen: dict[str, list[str]] = {}
        for f in files:
            for element in sorted(dataset.elements(f) - seen):
                unseen.setdefault(element, []).append(f)
        if unseen:
            def order(element):
                return SYMBOL_TO_Z.get(element, 1000), element

            elements = sorted(unseen, key=order)
            n = len({f for fs in unseen.values() for f in fs})
            example = unseen[elements[0]][0]
            raise InputError(
                f"{dataset.directory}: the {name} split holds "
                f"{'element' if len(elements) == 1 else 'elements'} {', '.join(elements)} absent "
                f"from the {reference} split ({n} of {len(files)} {name} molecules, e.g. "
                f"{example}; {reference} has {', '.join(sorted(seen, key=order)) or 'none'}): a "
                "learned functional cannot be fitted or judged on elements it never saw; change "
                "the seed or fractions of the recipe's splits table, or add molecules with "
                f"{'it' if len(elements) == 1 else 'them'} to the dataset"
                + (f" ({override} trains anyway)" if override else ""))


def save_splits(path: str | os.PathLike, splits: dict[str, list[str]]) -> None:
    """Write splits as JSON (``{"train": [...], ...}``)."""
    from mofdft_jax.data.shards import write_json_atomic

    write_json_atomic(Path(path), splits)


def load_splits(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read splits written by :func:`save_splits`."""
    return json.loads(Path(path).read_text())
