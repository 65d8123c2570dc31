"""Densities a minimisation with a learned functional visits, with their label-free bounds (files).

Written by ``mofdft sample-visited`` (:mod:`mofdft_jax.commands.sample_visited`), read by
``mofdft train --visited DIR`` (:func:`mofdft_jax.data.training_set.prepare_training_data`). A
*visited directory* holds

* ``visited.json`` — what produced the samples: the checkpoint and its data fingerprint, the
  dataset directory, the optimiser, initial guess and step budget, the kept steps; and per shard
  file the sample file, its SHA-256 and the solve's status;
* one ``<shard stem>.visited.npz`` per labelled molecule (:class:`VisitedSamples`).

The bounds (:class:`mofdft_jax.train.losses.VisitedBounds`) depend only on the visited density,
the molecule's KS energy and the θ-independent energy terms, not on the model that found the
density, so samples of earlier models stay valid training rows after retraining: the sampling
rounds of the adaptive scheme accumulate (pass several directories to ``--visited``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mofdft_jax.atomic_io import write_bytes_atomic
from mofdft_jax.data.shards import file_sha256, write_json_atomic

VISITED_FORMAT = "mofdft_jax.visited"
VISITED_MANIFEST = "visited.json"


class VisitedSamples(NamedTuple):
    """The kept states of one minimisation of one labelled molecule.

    Attributes:
      coeffs: ``(n, naux)`` raw density coefficients p_v (normalised, wᵀp_v = N).
      bounds: ``(n, 3)`` kcal/mol: k_var, k_desc, k_conv of
        :class:`~mofdft_jax.train.losses.VisitedBounds`.
      steps: ``(n,)`` solver step of each state (0 = the initial guess).
      energy_error_kcal: ``(n,)`` E_θ(p_v) − E_KS of the model that was sampled (diagnostic).
      distance: ``(n,)`` Coulomb-norm distance ‖p_v − p*‖_W̃ (diagnostic).
    """

    coeffs: np.ndarray
    bounds: np.ndarray
    steps: np.ndarray
    energy_error_kcal: np.ndarray
    distance: np.ndarray


def visited_file_name(shard_file: str) -> str:
    """``000003_ethanol_000002.h5`` → ``000003_ethanol_000002.visited.npz``."""
    return f"{Path(shard_file).stem}.visited.npz"


def write_visited(directory: str | os.PathLike, shard_file: str,
                  samples: VisitedSamples) -> dict:
    """Write the samples of one molecule atomically; returns ``{"file", "sha256", "n"}``."""
    directory = Path(directory)
    path = directory / visited_file_name(shard_file)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in samples._asdict().items()})
    write_bytes_atomic(path, buffer.getvalue())
    return {"file": path.name, "sha256": file_sha256(path), "n": int(samples.steps.shape[0])}


def read_visited_file(path: str | os.PathLike) -> VisitedSamples:
    with np.load(path) as npz:
        return VisitedSamples(**{k: np.asarray(npz[k]) for k in VisitedSamples._fields})


def write_visited_manifest(directory: str | os.PathLike, manifest: dict) -> None:
    write_json_atomic(Path(directory) / VISITED_MANIFEST, {"format": VISITED_FORMAT, **manifest})


def read_visited_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of a visited directory; a missing or foreign one is an ``InputError``."""
    import json

    from mofdft_jax.molecules.molecule import InputError

    path = Path(directory) / VISITED_MANIFEST
    if not path.is_file():
        raise InputError(f"{directory}: not a visited-density directory (no {VISITED_MANIFEST}; "
                         "write one with mofdft sample-visited)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != VISITED_FORMAT:
        raise InputError(f"{path}: format {manifest.get('format')!r}, expected {VISITED_FORMAT!r}")
    return manifest


def read_visited(directories, dataset) -> tuple[dict, list]:
    """Samples of several visited directories for the molecules of ``dataset``.

    Args:
      directories: visited directories (rounds of sampling; their samples are concatenated).
      dataset: the :class:`~mofdft_jax.data.loader.Dataset` they were sampled from.

    Returns:
      ``({shard file: VisitedSamples}, [[shard file, sha256], …])`` — the second part identifies
      the samples (by content, not path) in the training data's fingerprint.

    Raises:
      InputError: a directory sampled from different label settings (its bounds use the KS
        energies of those settings).
    """
    from mofdft_jax.molecules.molecule import InputError

    merged: dict[str, list] = {}
    record = []
    for directory in directories:
        manifest = read_visited_manifest(directory)
        if manifest.get("label_settings") != dataset.label_settings:
            raise InputError(f"{directory}: sampled with label settings "
                             f"{manifest.get('label_settings')}, the dataset has "
                             f"{dataset.label_settings}")
        for shard_file, entry in sorted(manifest.get("molecules", {}).items()):
            merged.setdefault(shard_file, []).append(
                read_visited_file(Path(directory) / entry["file"]))
            record.append([shard_file, entry["sha256"]])
    samples = {f: VisitedSamples(*(np.concatenate([getattr(s, k) for s in parts])
                                   for k in VisitedSamples._fields))
               for f, parts in merged.items()}
    return samples, record


__all__ = ["VISITED_FORMAT", "VisitedSamples", "read_visited", "read_visited_file",
           "read_visited_manifest", "visited_file_name", "write_visited",
           "write_visited_manifest"]
