"""Checkpoints of a :class:`~mofdft_jax.model.functional.LearnedFunctional`.

A checkpoint is two files with the same stem:

* ``STEM.eqx``: the network weights (``equinox.tree_serialise_leaves``, float64, bit exact);
* ``STEM.json``: the model config, the target, the adapter switches, the training statistics
  (floats written with Python's round-trip ``repr``, so they load bit exactly), a fingerprint of the
  training data, the SHA-256 of the weights file, package versions and free-form ``extra``
  metadata (e.g. the trainer's epoch and losses).

Both files are written atomically (:mod:`mofdft_jax.atomic_io`: temporary file, fsync,
``os.replace``); the weights first, so a crash leaves either the old pair or a new weights file
whose hash does not match the old metadata, which :func:`load_checkpoint` reports instead of loading a mixed pair.

This module does file I/O but imports no host layer (no PySCF); it is the model's persistence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from mofdft_jax._version import __version__
from mofdft_jax.config import ensure_x64
from mofdft_jax.atomic_io import write_bytes_atomic
from mofdft_jax.density.adapter import AdapterStatistics
from mofdft_jax.model.functional import LearnedFunctional
from mofdft_jax.model.graphormer import GraphormerConfig, abstract_graphormer

#: Identifies the metadata format.
CHECKPOINT_FORMAT = "mofdft_jax.learned_functional"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded (missing, corrupt, or mismatched with what was asked)."""


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """The metadata of a checkpoint besides the functional itself."""

    data_fingerprint: str
    versions: dict
    extra: dict


def checkpoint_paths(path) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths for ``path`` given as a stem or either file name."""
    path = Path(path)
    if path.suffix in (".eqx", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".eqx"), path.with_name(path.name + ".json")


def _statistics_to_json(stats: AdapterStatistics) -> dict:
    out = {}
    for name, value in stats._asdict().items():
        arr = np.asarray(value)
        if arr.dtype == bool:
            out[name] = arr.tolist()
            continue
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"statistics field {name} has non-finite values")
        out[name] = arr.tolist()  # Python floats: json writes the round-trip repr
    return out


def _statistics_from_json(data: dict) -> AdapterStatistics:
    fields = AdapterStatistics._fields
    missing = [f for f in fields if f not in data]
    if missing:
        raise CheckpointError(f"checkpoint statistics lack {missing}")
    values = {}
    for name in fields:
        arr = np.asarray(data[name])
        if name == "element_seen":
            values[name] = jnp.asarray(arr.astype(bool))
        else:
            values[name] = jnp.asarray(arr.astype(np.float64))
    return AdapterStatistics(**values)


def _versions() -> dict:
    return {"mofdft_jax": __version__, "jax": jax.__version__, "equinox": eqx.__version__,
            "numpy": np.__version__}


def save_checkpoint(path, functional: LearnedFunctional, *, data_fingerprint: str = "",
                    extra: Optional[dict] = None) -> tuple[Path, Path]:
    """Write ``functional`` to ``STEM.eqx`` + ``STEM.json`` atomically; returns the two paths.

    Args:
      path: the stem (or either file name).
      functional: the learned functional.
      data_fingerprint: identifies the training data (e.g. a hash of the dataset manifest).
      extra: JSON-serialisable metadata stored verbatim (trainer state, metrics).
    """
    ensure_x64()
    weights_path, meta_path = checkpoint_paths(path)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, functional.model)
    weights = buf.getvalue()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "target": functional.target,
        "use_local_frames": functional.use_local_frames,
        "use_reparam": functional.use_reparam,
        "parity_symmetric": functional.parity_symmetric,
        "config": functional.config.to_dict(),
        "statistics": _statistics_to_json(functional.statistics),
        "data_fingerprint": data_fingerprint,
        "weights_file": weights_path.name,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "versions": _versions(),
        "extra": extra or {},
    }
    text = json.dumps(meta, indent=1, allow_nan=False)
    write_bytes_atomic(weights_path, weights)
    write_bytes_atomic(meta_path, (text + "\n").encode())
    return weights_path, meta_path


def _config_diff(a: GraphormerConfig, b: GraphormerConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}={da[k]!r} (checkpoint) vs {db[k]!r} (requested)" for k in da if da[k] != db[k]]


def read_checkpoint_metadata(path) -> dict:
    """The parsed ``STEM.json`` of a checkpoint."""
    _, meta_path = checkpoint_paths(path)
    if not meta_path.exists():
        raise CheckpointError(f"{meta_path}: checkpoint metadata not found")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path}: not valid JSON ({exc})") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{meta_path}: not a mofdft_jax learned-functional checkpoint")
    if meta.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{meta_path}: checkpoint format version {meta.get('format_version')}"
                              f", this mofdft_jax reads {CHECKPOINT_VERSION}")
    return meta


def load_checkpoint(path, config: Optional[GraphormerConfig] = None, *,
                    target: Optional[str] = None) -> tuple[LearnedFunctional, CheckpointInfo]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
      path: stem or either file name.
      config: if given, the checkpoint's config must equal it (else :class:`CheckpointError`
        naming the differing fields).
      target: if given, the checkpoint's target must equal it.

    Returns:
      ``(functional, info)``.
    """
    ensure_x64()
    weights_path, meta_path = checkpoint_paths(path)
    meta = read_checkpoint_metadata(path)
    try:
        stored = GraphormerConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: invalid model config ({exc})") from None
    if config is not None and config != stored:
        raise CheckpointError(f"{meta_path}: checkpoint config does not match the requested one: "
                              + "; ".join(_config_diff(stored, config)))
    if target is not None and meta["target"] != target:
        raise CheckpointError(f"{meta_path}: checkpoint target is {meta['target']!r}, "
                              f"not {target!r}")
    if not weights_path.exists():
        raise CheckpointError(f"{weights_path}: checkpoint weights not found")
    weights = weights_path.read_bytes()
    if hashlib.sha256(weights).hexdigest() != meta["weights_sha256"]:
        raise CheckpointError(f"{weights_path}: weights do not match the metadata in {meta_path} "
                              "(interrupted save or files from different checkpoints)")
    like = abstract_graphormer(stored)
    buf = io.BytesIO(weights)
    try:
        model = eqx.tree_deserialise_leaves(buf, like)
    except Exception as exc:  # numpy raises several kinds on truncated/misaligned data
        raise CheckpointError(f"{weights_path}: weights do not fit the stored config "
                              f"({type(exc).__name__}: {exc})") from None
    if buf.read(1):
        raise CheckpointError(f"{weights_path}: weights file holds more arrays than the stored "
                              "config has parameters")
    for got, want in zip(jax.tree.leaves(model), jax.tree.leaves(like)):
        if getattr(got, "shape", None) != want.shape or got.dtype != want.dtype:
            raise CheckpointError(f"{weights_path}: weight of shape {getattr(got, 'shape', None)} "
                                  f"{getattr(got, 'dtype', None)} where the config needs "
                                  f"{want.shape} {want.dtype}")
    statistics = _statistics_from_json(meta["statistics"])
    functional = LearnedFunctional(model=model, statistics=statistics, target=meta["target"],
                                   use_local_frames=bool(meta["use_local_frames"]),
                                   use_reparam=bool(meta["use_reparam"]),
                                   parity_symmetric=bool(meta.get("parity_symmetric", False)))
    info = CheckpointInfo(data_fingerprint=meta.get("data_fingerprint", ""),
                          versions=meta.get("versions", {}), extra=meta.get("extra", {}))
    return functional, info
