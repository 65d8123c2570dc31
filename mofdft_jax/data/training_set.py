"""Host preparation of a dataset for the trainer: shards → per-molecule labels in p′ space.

For every molecule of a split (one shard = one geometry with its labelled SCF steps):

1. the kept steps for the training target (:func:`mofdft_jax.data.loader.iter_molecule_steps`:
   ``filter500``, ground-state-only ablation);
2. the density-basis molecule (PySCF ``auxmol`` from the dataset's label settings), its overlap W,
   its normalisation vector w, and the :class:`~mofdft_jax.density.adapter.AdapterGeometry` with
   the functional's switches (local frames, natural reparametrisation) — built **once** per molecule
   and kept in memory (:data:`_GEOMETRY_CACHE`);
3. the labels mapped into p′ space (:func:`mofdft_jax.train.data.transform_molecule_labels`).

The training statistics (spec §1.8) are computed on the training split only
(:func:`mofdft_jax.density.adapter.compute_statistics`), and a fingerprint identifies the exact
training data (label settings, target, filters, shard hashes of every split used).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
from collections.abc import Sequence

import numpy as np

from mofdft_jax.data.loader import Dataset, iter_molecule_steps, open_dataset
from mofdft_jax.data.splits import make_splits
from mofdft_jax.density.adapter import (AdapterStatistics, LabelledGeometry,
                                        build_adapter_geometry, compute_statistics)
from mofdft_jax.molecules.molecule import InputError, Molecule
from mofdft_jax.train.data import MoleculeData, transform_molecule_labels

#: In-memory cache of per-molecule density-basis data: (dataset dir, file, frames, reparam) →
#: (geometry, norm). Geometries do not depend on the target or the filters.
_GEOMETRY_CACHE: dict[tuple, tuple] = {}


@dataclasses.dataclass
class PreparedData:
    """A dataset ready for training.

    Attributes:
      splits: ``{name: [MoleculeData]}`` for the requested splits.
      files: ``{name: [shard file]}`` (molecules with no kept step are absent from ``splits``).
      statistics: adapter statistics of the training split.
      fingerprint: SHA-256 identifying the data (see :func:`data_fingerprint`).
      label_settings: the dataset's label settings.
      directory: the dataset directory.
    """

    splits: dict
    files: dict
    statistics: AdapterStatistics
    fingerprint: str
    label_settings: dict
    directory: str


def density_basis_data(dataset: Dataset, file: str, numbers, coords_bohr, *,
                       use_local_frames: bool = True, use_reparam: bool = True):
    """``(AdapterGeometry, w)`` of one molecule of ``dataset`` (cached in memory)."""
    key = (str(dataset.directory.resolve()), file, bool(use_local_frames), bool(use_reparam))
    if key not in _GEOMETRY_CACHE:
        from mofdft_jax.qchem.basis import (PAPER_BASIS, ETB_BETA, aux_function_atoms,
                                            aux_function_l, make_auxbasis, make_auxmol, make_mol)
        from mofdft_jax.qchem.integrals import compute_aux_norm

        settings = dataset.label_settings
        source = settings.get("aux_orbital_basis") or PAPER_BASIS
        beta = float(settings.get("aux_beta", ETB_BETA))
        molecule = Molecule(numbers=numbers, coords_bohr=coords_bohr, name=file)
        mol = make_mol(molecule, settings.get("basis", PAPER_BASIS))
        auxmol = make_auxmol(mol, make_auxbasis(source, beta))
        basis = types.SimpleNamespace(atom_numbers=np.asarray(numbers),
                                      coords=np.asarray(coords_bohr),
                                      aux_atom=aux_function_atoms(auxmol),
                                      aux_l=aux_function_l(auxmol),
                                      overlap=auxmol.intor("int1e_ovlp") if use_reparam else None)
        try:
            geometry = build_adapter_geometry(basis, use_local_frames=use_local_frames,
                                              use_reparam=use_reparam)
        except ValueError as exc:
            raise InputError(f"{dataset.directory / file}: {exc}") from None
        _GEOMETRY_CACHE[key] = (geometry, compute_aux_norm(auxmol))
    return _GEOMETRY_CACHE[key]


def data_fingerprint(dataset: Dataset, files: dict, *, target: str, ground_state_only: bool,
                     filter_above_ground_kcal: float | None, visited: Sequence = ()) -> str:
    """SHA-256 of the label settings, the target, the filters and the shard hashes per split
    (and of the visited-density samples, when there are any)."""
    record = {
        "label_settings": dataset.label_settings,
        "target": target,
        "ground_state_only": bool(ground_state_only),
        "filter_above_ground_kcal": filter_above_ground_kcal,
        "splits": {name: [[f, dataset.entry(f).get("sha256", "")] for f in fs]
                   for name, fs in sorted(files.items())},
    }
    if visited:
        record["visited"] = [list(v) for v in visited]
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def prepare_training_data(directory: str | os.PathLike, *, target: str = "ts_res",
                          split_names: Sequence[str] = ("train", "val"),
                          splits: dict | None = None, ground_state_only: bool = False,
                          filter_above_ground_kcal: float | None = None,
                          use_local_frames: bool = True, use_reparam: bool = True,
                          grad_scale_kind: str = "max", visited: Sequence = (),
                          progress=None) -> PreparedData:
    """Read a dataset and prepare the requested splits for :func:`mofdft_jax.train.loop.train`.

    Args:
      directory: dataset directory written by ``mofdft datagen``.
      target: ``ts_res``, ``txc`` or ``tot``.
      split_names: which splits to prepare (``train`` must be among them).
      splits: ``{name: [shard files]}``; default :func:`mofdft_jax.data.splits.make_splits` (the
        recipe's seeded 8:1:1 split).
      ground_state_only: keep only the converged step of each molecule (ablation, spec §5.6).
      filter_above_ground_kcal: drop steps this far above the ground state ("filter500").
      use_local_frames, use_reparam: adapter switches (ablations, spec §5.6 Table S9).
      grad_scale_kind: ``max`` (SI B.3.1) or ``mean`` (Eq. 5) gradient scale for λ.
      visited: directories written by ``mofdft sample-visited`` (:mod:`mofdft_jax.data.visited`):
        their densities join their molecules' rows in the train and val splits (label weight 0,
        bound constants; not in the statistics). A sample of a test-split molecule is an error.
      progress: optional ``fn(done, total)`` called after each molecule.
    """
    dataset = open_dataset(directory)
    if "train" not in split_names:
        raise ValueError("split_names must include 'train' (the statistics come from it)")
    all_splits = make_splits(dataset) if splits is None else splits
    missing = [s for s in split_names if s not in all_splits]
    if missing:
        raise InputError(f"{dataset.directory}: no split {missing[0]!r} "
                         f"(splits: {', '.join(all_splits)})")
    if not all_splits["train"]:
        raise InputError(f"{dataset.directory}: the training split is empty "
                         f"({len(dataset)} completed shards)")
    visited_samples, visited_record = {}, []
    if visited:
        from mofdft_jax.data.visited import read_visited

        visited_samples, visited_record = read_visited(visited, dataset)
        leaked = sorted(set(visited_samples) & set(all_splits.get("test", [])))
        if leaked:
            raise InputError(f"visited densities of {len(leaked)} test-split molecule(s) (e.g. "
                             f"{leaked[0]}): the test split must stay unseen")
    total = sum(len(all_splits[s]) for s in split_names)
    done = 0
    raw: dict[str, list] = {}
    kept_files: dict[str, list] = {}
    for name in split_names:
        raw[name] = []
        kept_files[name] = []
        for item in iter_molecule_steps(dataset, all_splits[name], target,
                                        filter_above_ground_kcal=filter_above_ground_kcal,
                                        ground_state_only=ground_state_only):
            geometry, norm = density_basis_data(dataset, item.file, item.numbers,
                                                item.coords_bohr,
                                                use_local_frames=use_local_frames,
                                                use_reparam=use_reparam)
            raw[name].append((item, geometry, norm))
            kept_files[name].append(item.file)
            done += 1
            if progress is not None:
                progress(done, total)
    if not raw["train"]:
        raise InputError(f"{dataset.directory}: no labelled step left in the training split")
    samples = [LabelledGeometry(atom_numbers=item.numbers, geometry=geometry, coeffs=item.coeffs,
                                grads=item.grad, energies=item.energy, ground_coeffs=item.p_ref)
               for item, geometry, _ in raw["train"]]
    statistics = compute_statistics(samples, grad_scale_kind=grad_scale_kind)
    prepared = {
        name: [transform_molecule_labels(item.file, item.numbers, item.coords_bohr, geometry,
                                         item.coeffs, item.grad, item.energy, item.p_ref, norm,
                                         response_dp=item.response_dp,
                                         response_hvp=item.response_hvp,
                                         **_visited_rows(visited_samples.get(item.file)))
               for item, geometry, norm in items]
        for name, items in raw.items()
    }
    fingerprint = data_fingerprint(dataset, kept_files, target=target,
                                   ground_state_only=ground_state_only,
                                   filter_above_ground_kcal=filter_above_ground_kcal,
                                   visited=visited_record)
    return PreparedData(splits=prepared, files=kept_files, statistics=statistics,
                        fingerprint=fingerprint, label_settings=dataset.label_settings,
                        directory=str(dataset.directory))


def _visited_rows(samples) -> dict:
    """Keyword arguments of :func:`transform_molecule_labels` for a molecule's visited samples."""
    if samples is None:
        return {}
    return {"visited_coeffs": samples.coeffs, "visited_bounds": samples.bounds}
