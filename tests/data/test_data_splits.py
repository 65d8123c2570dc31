"""Splits: deterministic from the seed, exact sizes, and no group (geometry, conformer, parent
structure) ever in two splits."""

from __future__ import annotations

import numpy as np
import pytest

from mofdft_jax.data import shards
from mofdft_jax.data.loader import open_dataset
from mofdft_jax.data.splits import load_splits, make_splits, save_splits, split_groups, split_sizes
from mofdft_jax.molecules import InputError

from synthetic_labels import synthetic_labels  # noqa: E402  (tests/data is on sys.path)


def test_split_sizes_largest_remainder_and_nonempty():
    assert split_sizes(100, (0.8, 0.1, 0.1)) == [80, 10, 10]
    assert split_sizes(8, (0.8, 0.1, 0.1)) == [6, 1, 1]
    assert split_sizes(17, (0.8, 0.1, 0.1)) == [13, 2, 2]  # 13.6, 1.7, 1.7
    assert split_sizes(3, (0.8, 0.1, 0.1)) == [1, 1, 1]  # every positive fraction gets a group
    assert split_sizes(2, (0.8, 0.1, 0.1)) == [2, 0, 0]
    assert split_sizes(10, (0.9, 0.1)) == [9, 1]
    assert sum(split_sizes(13388, (0.8, 0.1, 0.1))) == 13388
    with pytest.raises(InputError):
        split_sizes(10, (0.5, -0.5, 1.0))


def test_split_groups_deterministic_and_leak_free(rng):
    # 300 items in 60 groups of 5 (e.g. five SCF steps or five fragments of one parent)
    keys = [f"g{int(i)}" for i in rng.integers(0, 60, size=300)]
    a = split_groups(keys, (0.8, 0.1, 0.1), seed=7)
    b = split_groups(list(keys), (0.8, 0.1, 0.1), seed=7)
    c = split_groups(keys, (0.8, 0.1, 0.1), seed=8)
    assert a == b and a != c
    assert sorted(sum(a.values(), [])) == list(range(300))  # a partition
    groups_of = {name: {keys[i] for i in idx} for name, idx in a.items()}
    assert not groups_of["train"] & groups_of["val"]
    assert not groups_of["train"] & groups_of["test"]
    assert not groups_of["val"] & groups_of["test"]
    n_groups = len(set(keys))
    assert [len(groups_of[n]) for n in ("train", "val", "test")] == split_sizes(n_groups,
                                                                               (0.8, 0.1, 0.1))
    # the assignment depends only on the set of keys, not on item order
    order = rng.permutation(300)
    shuffled = split_groups([keys[i] for i in order], (0.8, 0.1, 0.1), seed=7)
    regrouped = {name: {keys[order[i]] for i in idx} for name, idx in shuffled.items()}
    assert regrouped == groups_of


def _dataset(tmp_path, rng, metas):
    """A dataset directory with one synthetic shard per meta dict."""
    molecules = []
    labels0 = synthetic_labels(rng)
    manifest = shards.new_manifest({"name": "t", "splits": {"fractions": [0.5, 0.25, 0.25],
                                                            "seed": 3}},
                                   labels0.settings, [])
    for i, meta in enumerate(metas):
        labels = synthetic_labels(rng, name=f"m{i}")
        file = shards.shard_file_name(i, labels.molecule.name)
        info = shards.write_shard(tmp_path / file, labels, meta=meta)
        molecules.append({"index": i, "name": f"m{i}", "file": file, "natm": 3, "meta": meta})
        manifest["shards"][file] = {**info, "index": i, "name": f"m{i}", "natm": 3,
                                    "converged": True, "wall_s": 1.0}
    manifest["molecules"] = molecules
    shards.write_json_atomic(tmp_path / shards.MANIFEST_NAME, manifest)
    return open_dataset(tmp_path)


def test_make_splits_per_shard_and_grouped(tmp_path, rng):
    metas = [{"conformer_id": i, "parent": f"p{i // 4}"} for i in range(16)]
    ds = _dataset(tmp_path, rng, metas)
    splits = make_splits(ds)  # recipe's [splits]: 0.5/0.25/0.25, seed 3, one group per shard
    assert [len(splits[n]) for n in ("train", "val", "test")] == [8, 4, 4]
    assert sorted(sum(splits.values(), [])) == sorted(ds.files)
    assert splits == make_splits(tmp_path)  # same from the directory path
    assert splits != make_splits(ds, seed=4)

    by_parent = make_splits(ds, group_by="parent")
    parents = {n: {ds.meta(f)["parent"] for f in files} for n, files in by_parent.items()}
    assert sum(len(p) for p in parents.values()) == 4  # each parent in exactly one split
    with pytest.raises(InputError, match="no metadata key 'fragment'"):
        make_splits(ds, group_by="fragment")

    save_splits(tmp_path / "splits.json", splits)
    assert load_splits(tmp_path / "splits.json") == splits


def test_conformer_steps_never_straddle_splits(tmp_path, rng):
    """Every labelled step of a geometry travels with its shard: the split of the steps read
    through the loader partitions the shards."""
    from mofdft_jax.data.loader import iter_molecule_steps

    ds = _dataset(tmp_path, rng, [{"conformer_id": i} for i in range(10)])
    splits = make_splits(ds, fractions=(0.8, 0.1, 0.1), seed=0)
    seen = {}
    for name, files in splits.items():
        for item in iter_molecule_steps(ds, files):
            assert item.file not in seen
            seen[item.file] = name
            assert item.n_steps == 4
    assert len(seen) == 10
    coeffs = {name: np.concatenate([it.coeffs for it in iter_molecule_steps(ds, files)])
              for name, files in splits.items() if files}
    train = {row.tobytes() for row in coeffs["train"]}
    assert not any(row.tobytes() in train for row in coeffs["test"])
