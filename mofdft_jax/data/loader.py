"""Reading a dataset for training: labelled SCF steps per molecule, with the paper's filters.

Interface for the trainer::

    ds = open_dataset("cache/ethanol_quick")          # manifest + completed shards
    splits = make_splits(ds)                          # {"train": [files], "val": ..., "test": ...}
    for item in iter_molecule_steps(ds, splits["train"], target="ts_res",
                                    filter_above_ground_kcal=500.0):
        item.numbers      # (natm,)   atomic numbers
        item.coords_bohr  # (natm, 3)
        item.coeffs       # (K, naux) density coefficients p^(k) of the kept steps
        item.energy       # (K,)      target value (Hartree) of each kept step
        item.grad         # (K, naux) target gradient (unprojected, spec §1.7)
        item.steps        # (K,)      SCF step number k of each kept row (1 = first labelled step)
        item.p_ref, item.ks_energy, item.hf_forces_ref, item.init_coeffs  # references

Each yielded :class:`MoleculeSteps` holds the arrays of one molecule (one geometry); ``naux`` varies
between molecules, so the trainer pads (e.g. to the per-atom slot layout of spec §1.4). Molecules
whose steps are all filtered out are skipped. The density-basis layout of each function (atom, l) is
rebuilt with :func:`mofdft_jax.qchem.basis.make_auxmol` from ``numbers``/``coords_bohr`` and the
dataset's label settings.

Filters (spec §1.2, §5.6):

* ``filter_above_ground_kcal``: drop steps whose KS total energy is more than this many kcal/mol
  above the converged ground state ("filter500" of the chignolin data: 500 kcal/mol);
* ``ground_state_only``: keep only the last labelled step, whose density is the converged KS
  density p* (the "ground-state-only" ablation).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from mofdft_jax.data import shards
from mofdft_jax.data.shards import DatasetError
from mofdft_jax.units import KCAL_TO_HARTREE

#: Target names accepted by the loader: the three training targets of spec §3.4 plus the plain
#: kinetic label T_S.
LOADER_TARGETS = ("ts_res", "txc", "tot", "ts")
#: The paper's "filter500" threshold (spec §1.2), kcal/mol above the ground state.
FILTER500_KCAL = 500.0


class Dataset:
    """A dataset directory opened for reading: its manifest and completed shards.

    Attributes:
      directory: the dataset directory.
      manifest: the parsed ``manifest.json``.
      files: completed shard file names, in recipe order.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.manifest = shards.read_manifest(self.directory)
        self.files = sorted(self.manifest["shards"], key=shards.shard_index)
        self._meta = {m["file"]: m.get("meta", {}) for m in self.manifest["molecules"]}
        self._formula = {m["file"]: m.get("formula") for m in self.manifest["molecules"]}

    def __len__(self) -> int:
        return len(self.files)

    @property
    def label_settings(self) -> dict:
        """The label settings every shard was made with."""
        return self.manifest["label_settings"]

    def meta(self, file: str) -> dict:
        """Recipe metadata of a shard (source id, conformer id, isomer group …)."""
        return self._meta.get(file, {})

    def elements(self, file: str) -> set[str]:
        """Element symbols of a shard's molecule, from the manifest's Hill formula (the shard is
        read only when the manifest has no formula)."""
        formula = self._formula.get(file)
        if not formula:
            formula = self.read(file).molecule.formula
        return set(re.findall(r"[A-Z][a-z]?", formula))

    def entry(self, file: str) -> dict:
        """The manifest record of a shard (sha256, size, steps, wall time)."""
        return self.manifest["shards"][file]

    def read(self, file: str):
        """The MoleculeLabels of one shard, checked against the dataset's settings."""
        if file not in self.manifest["shards"]:
            raise DatasetError(f"{self.directory / file}: not a completed shard of this dataset")
        wall = self.manifest["shards"][file].get("wall_s")
        return shards.read_shard(self.directory / file, expected_settings=self.label_settings,
                                 wall_s=math.nan if wall is None else float(wall))

    def __iter__(self):
        for file in self.files:
            yield self.read(file)


def open_dataset(directory: str | os.PathLike) -> Dataset:
    """Open a dataset directory written by ``mofdft datagen``."""
    return Dataset(directory)


@dataclasses.dataclass(frozen=True)
class MoleculeSteps:
    """The kept labelled steps of one molecule for one training target (arrays, Hartree/Bohr).

    Attributes:
      file: shard file name; name: molecule name.
      numbers: ``(natm,)``; coords_bohr: ``(natm, 3)``.
      coeffs: ``(K, naux)`` p⁽ᵏ⁾; energy: ``(K,)`` target; grad: ``(K, naux)`` target gradient.
      steps: ``(K,)`` SCF step number of each row (1-based; the last labelled step is p*).
      p_ref: ``(naux,)`` converged coefficients p*; ks_energy: converged KS components (floats).
      energy_ref: the target's value at convergence (last labelled step), Hartree.
      hf_forces_ref: ``(natm, 3)``; init_coeffs: ``{"minao", "huckel"}`` → ``(naux,)``.
      meta: recipe metadata of the molecule.
      perturbed: ``(K,)`` bool, the row's Fock matrix carried a random potential.
      response_dp: ``(K, M, naux)`` unit response directions δp, or ``None`` (no curvature labels).
      response_hvp: ``(K, M, naux)`` the target's Hessian-vector labels ∇²T δp, or ``None``.
    """

    file: str
    name: str
    numbers: np.ndarray
    coords_bohr: np.ndarray
    coeffs: np.ndarray
    energy: np.ndarray
    grad: np.ndarray
    steps: np.ndarray
    p_ref: np.ndarray
    ks_energy: dict
    energy_ref: float
    hf_forces_ref: np.ndarray
    init_coeffs: dict
    meta: dict
    perturbed: np.ndarray | None = None
    response_dp: np.ndarray | None = None
    response_hvp: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        return int(self.coeffs.shape[0])

    @property
    def naux(self) -> int:
        return int(self.coeffs.shape[1])


def select_steps(labels, *, filter_above_ground_kcal: float | None = None,
                 ground_state_only: bool = False) -> np.ndarray:
    """Indices of the labelled steps kept by the filters.

    .. math:: \\text{keep } k \\iff E^{(k)}_{tot} - E^{*}_{tot} \\le \\Delta, \\quad
              \\Delta = \\text{filter\\_above\\_ground\\_kcal} / 627.5

    (spec §1.2 "filter500"); ``ground_state_only`` keeps the last step (the converged density).
    """
    n = int(labels.n_steps)
    if ground_state_only:
        return np.array([n - 1], dtype=np.int64) if n > 0 else np.zeros(0, dtype=np.int64)
    keep = np.ones(n, dtype=bool)
    if filter_above_ground_kcal is not None:
        excess = np.asarray(labels.step_energies["e_tot"]) - float(labels.ks_energy["e_tot"])
        keep &= excess <= float(filter_above_ground_kcal) * KCAL_TO_HARTREE
    return np.flatnonzero(keep)


def molecule_steps(labels, file: str, target: str = "ts_res", *,
                   filter_above_ground_kcal: float | None = None, ground_state_only: bool = False,
                   meta: dict | None = None) -> MoleculeSteps:
    """The kept steps of one MoleculeLabels for ``target`` (``ts_res``, ``txc``, ``tot``, ``ts``)."""
    if target not in LOADER_TARGETS:
        raise ValueError(f"unknown target {target!r} (known: {', '.join(LOADER_TARGETS)})")
    idx = select_steps(labels, filter_above_ground_kcal=filter_above_ground_kcal,
                       ground_state_only=ground_state_only)
    values = np.asarray(labels.ts if target == "ts" else labels.targets[target])
    grads = np.asarray(labels.ts_grad if target == "ts" else labels.target_grads[target])
    mol = labels.molecule
    return MoleculeSteps(
        file=file, name=mol.name, numbers=mol.numbers, coords_bohr=mol.coords_bohr,
        coeffs=np.asarray(labels.coeffs)[idx], energy=values[idx], grad=grads[idx],
        steps=labels.cycle_of_steps()[idx],
        p_ref=np.asarray(labels.p_ref), ks_energy=dict(labels.ks_energy),
        energy_ref=float(values[-1]), hf_forces_ref=np.asarray(labels.hf_forces_ref),
        init_coeffs=dict(labels.init_coeffs), meta=dict(meta or {}),
        perturbed=labels.perturbed_steps()[idx],
        response_dp=(None if labels.response_dp is None else np.asarray(labels.response_dp)[idx]),
        response_hvp=(None if labels.response_hvp is None
                      else np.asarray(labels.response_hvp[target])[idx]))


def iter_molecule_steps(dataset: Dataset | str | os.PathLike, files: Iterable[str] | None = None,
                        target: str = "ts_res", *, filter_above_ground_kcal: float | None = None,
                        ground_state_only: bool = False) -> Iterator[MoleculeSteps]:
    """Yield the kept labelled steps of each molecule of ``files`` (default: all shards), in order.

    Molecules with no step left after filtering are skipped.
    """
    if not isinstance(dataset, Dataset):
        dataset = open_dataset(dataset)
    for file in (dataset.files if files is None else files):
        item = molecule_steps(dataset.read(file), file, target,
                              filter_above_ground_kcal=filter_above_ground_kcal,
                              ground_state_only=ground_state_only, meta=dataset.meta(file))
        if item.n_steps:
            yield item


def count_steps(dataset: Dataset, files: Iterable[str] | None = None) -> int:
    """Total labelled steps of ``files`` (from the manifest, without reading shards)."""
    files = dataset.files if files is None else files
    return int(sum(dataset.entry(f)["n_steps"] for f in files))
