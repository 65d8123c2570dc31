"""Resumable, distributed label generation: recipe → per-molecule KS labels → shards.

One task per molecule runs :func:`mofdft_jax.qchem.labels.compute_labels` and writes its shard
itself (:func:`label_to_shard`), so a lost worker loses only the molecule it was labelling. Tasks go
through Dask distributed: a ``LocalCluster`` of single-threaded worker processes by default, or an
existing cluster when a scheduler address is given (then ``out_dir`` must be a path every worker can
write, e.g. a shared file system). ``workers=0`` runs the same task function in this process, one
molecule after the other (debugging, tiny recipes).

Resuming: the shards present in ``out_dir`` *are* the completed work. A rerun of the same command
takes the dataset lock, removes temporaries left by killed writers, adopts complete shards that the
manifest does not list yet (their header and settings are checked), and labels only the molecules
without a shard. Molecules whose failure is deterministic (SCF not converged, invalid input) are not
retried unless ``retry_failed``; failures from exceptions or lost workers are.

Determinism: every molecule is labelled independently from its own geometry and the recipe's label
settings, workers are single-threaded (``OMP_NUM_THREADS=1``), and shards contain no timestamps, so
the same recipe produces byte-identical shards whatever the worker count or completion order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py

from mofdft_jax.data import shards
from mofdft_jax.data.shards import DatasetError
from mofdft_jax.molecules.molecule import InputError, Molecule

#: Seconds between manifest rewrites while a run is in progress (always written at the end).
MANIFEST_FLUSH_S = 2.0
#: Fraction of the machine's memory shared by the LocalCluster workers.
LOCAL_MEMORY_FRACTION = 0.8


@dataclasses.dataclass(frozen=True)
class MoleculeTask:
    """One unit of work: molecule ``index`` of a recipe and where its shard goes."""

    index: int
    molecule: Molecule
    meta: dict
    file: str


def settings_to_dict(settings: Any) -> dict:
    """Plain dict of a LabelSettings dataclass (or a dict), JSON-able."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return shards._jsonable(settings)
    return shards._jsonable(dict(settings))


# ------------------------------------------------------------------------------------------------
# the task run by a worker


def label_to_shard(task: MoleculeTask, settings: Any, out_dir: str,
                   compute_fn: Callable | None = None) -> dict:
    """Label one molecule and write its shard; never raises for a per-molecule failure.

    Runs on a Dask worker (or in-process). Switches float64 JAX on (this is an entry point of the
    worker process), calls ``compute_fn(molecule, settings)`` (default
    :func:`mofdft_jax.qchem.labels.compute_labels`), and writes ``out_dir/task.file`` atomically.

    Returns:
      A record: ``status`` is ``"done"`` (with ``sha256``, ``size_bytes``, ``n_steps``,
      ``converged``, ``wall_s``) or ``"failed"`` (with ``reason``, ``kind`` in {``not_converged``,
      ``input_error``, ``error``} and ``retry``: whether a rerun should try again).
    """
    from mofdft_jax.config import enable_x64

    enable_x64()
    if compute_fn is None:
        from mofdft_jax.qchem.labels import compute_labels as compute_fn
    base = {"index": task.index, "name": task.molecule.name, "file": task.file}
    start = time.perf_counter()
    try:
        labels = compute_fn(task.molecule, settings)
    except InputError as exc:
        return {**base, "status": "failed", "kind": "input_error", "retry": False,
                "reason": str(exc), "wall_s": time.perf_counter() - start}
    except Exception as exc:  # one molecule's failure must not stop the run
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {**base, "status": "failed", "kind": "error", "retry": True,
                "reason": f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:"
                          f"{where.lineno})",
                "wall_s": time.perf_counter() - start}
    wall_s = float(getattr(labels, "wall_s", math.nan))
    if not math.isfinite(wall_s):
        wall_s = time.perf_counter() - start
    if not bool(labels.converged):
        return {**base, "status": "failed", "kind": "not_converged", "retry": False,
                "reason": f"SCF not converged after {int(labels.n_steps)} labelled steps",
                "wall_s": wall_s}
    info = shards.write_shard(Path(out_dir) / task.file, labels, meta=task.meta)
    return {**base, **info, "status": "done", "natm": task.molecule.natm,
            "converged": True, "wall_s": wall_s}


# ------------------------------------------------------------------------------------------------
# dataset directory state


@contextlib.contextmanager
def dataset_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``out_dir/.datagen.lock``: one writer per dataset directory.

    The OS releases the lock when the holder dies (SIGKILL included), so a killed run never blocks
    the rerun.
    """
    path = out_dir / shards.LOCK_NAME
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(f"{out_dir}: another `mofdft datagen` run is writing this dataset "
                               f"(lock {path} held)") from None
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def molecule_entries(tasks: list[MoleculeTask]) -> list[dict]:
    """Manifest ``molecules`` list: index, name, formula, atom count, shard file, geometry hash,
    recipe metadata."""
    return [{"index": t.index, "name": t.molecule.name, "formula": t.molecule.formula,
             "natm": t.molecule.natm, "file": t.file,
             "geometry_sha256": shards.geometry_sha256(t.molecule), "meta": t.meta}
            for t in tasks]


def _shard_n_steps(path: Path) -> int:
    try:
        with h5py.File(path, "r") as h5:
            return int(h5["n_steps"][()]) if "n_steps" in h5 else 0
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: damaged shard ({shards._short(exc)})") from None


def reconcile_directory(out_dir: Path, manifest: dict) -> dict:
    """Bring ``manifest["shards"]`` in line with the complete shards present in ``out_dir``.

    Shards the manifest lists but that vanished are dropped (they will be redone); shards present
    but not listed (written by a run killed before its manifest flush) are checked — header, schema,
    settings — and adopted with their checksum. A shard file that is not one of the recipe's
    molecules is refused (DatasetError naming it).

    Returns:
      ``{"adopted": [...], "dropped": [...], "removed_temporaries": [...]}``.
    """
    expected = {m["file"]: m for m in manifest["molecules"]}
    present = sorted(e.name for e in os.scandir(out_dir) if shards.is_shard_file_name(e.name))
    foreign = [name for name in present if name not in expected]
    if foreign:
        raise DatasetError(f"{out_dir / foreign[0]}: shard is not one of this recipe's molecules "
                           "(foreign shard); use a new --out directory")
    report = {"adopted": [], "dropped": [], "removed_temporaries": []}
    listed = manifest["shards"]
    for name in list(listed):
        path = out_dir / name
        if not path.exists() or path.stat().st_size != listed[name]["size_bytes"]:
            report["dropped"].append(name)
            del listed[name]
    for name in present:
        if name in listed:
            continue
        path = out_dir / name
        header = shards.read_shard_header(path)
        shards.check_shard_settings(path, header["settings"], manifest["label_settings"])
        mol = expected[name]
        listed[name] = {"index": mol["index"], "name": mol["name"], "file": name,
                        "sha256": shards.file_sha256(path), "size_bytes": path.stat().st_size,
                        "n_steps": _shard_n_steps(path), "natm": mol["natm"], "converged": True,
                        "wall_s": None}
        manifest["failures"].pop(name, None)
        report["adopted"].append(name)
    return report


# ------------------------------------------------------------------------------------------------
# driver


@dataclasses.dataclass
class GenerationSummary:
    """What a datagen run did (the ``--json`` output of ``mofdft datagen``)."""

    out_dir: str
    recipe: str
    preset: str | None
    molecules_total: int
    molecules_done: int
    molecules_skipped: int
    molecules_failed: int
    labelled_steps: int
    labelled_steps_new: int
    failures: list[dict]
    wall_s: float
    labels_per_min: float
    shard_bytes_total: int
    shard_bytes_per_molecule: float
    workers: int
    scheduler: str | None
    adopted_shards: int
    removed_temporaries: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def generate_dataset(
    tasks: list[MoleculeTask],
    settings: Any,
    out_dir: str | os.PathLike,
    *,
    recipe: dict | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    limit: int | None = None,
    retry_failed: bool = False,
    compute_fn: Callable | None = None,
    progress: bool = True,
    memory_limit_bytes: int | None = None,
) -> GenerationSummary:
    """Label every molecule of ``tasks`` that has no shard in ``out_dir`` yet.

    Args:
      tasks: the recipe's molecules in recipe order (:func:`mofdft_jax.data.recipes.recipe_tasks`).
      settings: LabelSettings for every molecule (stored in the manifest and in every shard).
      out_dir: dataset directory (created if needed).
      recipe: resolved recipe dict stored in the manifest (name, preset, source, labels).
      workers: number of single-threaded LocalCluster worker processes (default: CPU count);
        ``0`` runs in this process without Dask. Ignored when ``scheduler`` is given.
      scheduler: address of an existing Dask scheduler (``tcp://host:8786``).
      limit: label only the first ``limit`` molecules of the recipe (the manifest still lists all).
      retry_failed: also retry molecules whose earlier failure was deterministic.
      compute_fn: ``(molecule, settings) -> MoleculeLabels`` (default: ``compute_labels``); must be
        importable by the workers (a module-level function).
      progress: show a rich progress bar on stderr.
      memory_limit_bytes: per-worker memory limit of the LocalCluster (default: 80 % of the RAM
        shared by the workers).

    Returns:
      The :class:`GenerationSummary` of the run (totals cover the whole dataset directory).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recipe = dict(recipe or {})
    settings_dict = settings_to_dict(settings)
    molecules = molecule_entries(tasks)
    manifest_path = out_dir / shards.MANIFEST_NAME
    with dataset_lock(out_dir):
        if manifest_path.exists():
            manifest = shards.read_manifest(out_dir)
            shards.check_manifest_compatible(manifest, settings_dict, molecules, manifest_path)
        else:
            manifest = shards.new_manifest(recipe, settings_dict, molecules)
        removed = shards.remove_stale_temporaries(out_dir)
        report = reconcile_directory(out_dir, manifest)
        shards.write_json_atomic(manifest_path, manifest)

        selected = tasks if limit is None else tasks[:max(0, int(limit))]
        done_before = set(manifest["shards"])
        todo = [t for t in selected if t.file not in done_before and
                (retry_failed or manifest["failures"].get(t.file, {}).get("retry", True))]
        skipped = len(selected) - len(todo)
        new_records: list[dict] = []
        last_flush = time.monotonic()

        def record(result: dict) -> None:
            nonlocal last_flush
            new_records.append(result)
            if result["status"] == "done":
                entry = {k: result[k] for k in ("index", "name", "file", "sha256", "size_bytes",
                                                "n_steps", "natm", "converged", "wall_s")}
                manifest["shards"][result["file"]] = entry
                manifest["failures"].pop(result["file"], None)
            else:
                manifest["failures"][result["file"]] = {
                    k: result.get(k) for k in ("index", "name", "file", "kind", "retry", "reason",
                                               "wall_s")}
            if time.monotonic() - last_flush > MANIFEST_FLUSH_S:
                shards.write_json_atomic(manifest_path, manifest)
                last_flush = time.monotonic()

        n_workers = _run_tasks(todo, settings, out_dir, record, workers=workers,
                               scheduler=scheduler, compute_fn=compute_fn, progress=progress,
                               memory_limit_bytes=memory_limit_bytes)
        manifest["shards"] = dict(sorted(manifest["shards"].items()))
        manifest["failures"] = dict(sorted(manifest["failures"].items()))
        shards.write_json_atomic(manifest_path, manifest)

    wall_s = time.perf_counter() - start
    done_new = [r for r in new_records if r["status"] == "done"]
    selected_files = {t.file for t in selected}
    failures = [manifest["failures"][f] for f in manifest["failures"] if f in selected_files]
    steps_all = sum(e["n_steps"] for f, e in manifest["shards"].items() if f in selected_files)
    steps_new = sum(r["n_steps"] for r in done_new)
    bytes_all = [e["size_bytes"] for f, e in manifest["shards"].items() if f in selected_files]
    return GenerationSummary(
        out_dir=str(out_dir), recipe=str(recipe.get("name", "")), preset=recipe.get("preset"),
        molecules_total=len(selected), molecules_done=len(done_new),
        molecules_skipped=skipped, molecules_failed=len(failures),
        labelled_steps=steps_all, labelled_steps_new=steps_new,
        failures=[{k: f.get(k) for k in ("name", "file", "kind", "reason")} for f in failures],
        wall_s=wall_s, labels_per_min=60.0 * steps_new / wall_s if wall_s > 0 else 0.0,
        shard_bytes_total=int(sum(bytes_all)),
        shard_bytes_per_molecule=float(sum(bytes_all) / len(bytes_all)) if bytes_all else 0.0,
        workers=n_workers, scheduler=scheduler,
        adopted_shards=len(report["adopted"]), removed_temporaries=len(removed))


def fit_memory_setting(settings: Any, worker_memory_bytes: int | None) -> Any:
    """Lower PySCF's ``max_memory_mb`` to 60 % of a worker's memory limit (the rest is Python, JAX
    and the grid), so the nanny does not kill workers of big molecules. ``max_memory_mb`` is a
    resource setting (:data:`~mofdft_jax.data.shards.RUN_ONLY_SETTINGS`): it is not stored in shards
    and never makes two datasets incompatible."""
    if not worker_memory_bytes or not hasattr(settings, "max_memory_mb"):
        return settings
    cap = int(0.6 * worker_memory_bytes / 2**20)
    if settings.max_memory_mb <= cap:
        return settings
    return dataclasses.replace(settings, max_memory_mb=cap)


def _progress_bar(enabled: bool, total: int):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    progress = Progress(TextColumn("[bold]labelling"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled,
                        transient=False)
    return progress


def _run_tasks(todo: list[MoleculeTask], settings: Any, out_dir: Path,
               record: Callable[[dict], None], *, workers: int | None, scheduler: str | None,
               compute_fn: Callable | None, progress: bool,
               memory_limit_bytes: int | None) -> int:
    """Run ``todo`` in-process (workers == 0) or on Dask; ``record`` each result as it arrives.

    Returns the number of workers used.
    """
    bar = _progress_bar(progress, len(todo))
    failed = 0

    def status() -> str:
        return f"[red]{failed} failed" if failed else ""

    if not todo:
        return 0 if workers == 0 else (workers or 0)
    with bar:
        bar_task = bar.add_task("labelling", total=len(todo), status="")
        if scheduler is None and workers == 0:
            for task in todo:
                result = label_to_shard(task, settings, str(out_dir), compute_fn)
                failed += result["status"] != "done"
                record(result)
                bar.update(bar_task, advance=1, status=status())
            return 0
        with _dask_client(workers, scheduler, memory_limit_bytes) as (client, n_workers, limit):
            from distributed import as_completed

            settings = fit_memory_setting(settings, limit)

            futures = {}
            for task in todo:
                future = client.submit(label_to_shard, task, settings, str(out_dir), compute_fn,
                                       key=f"mofdft-label-{task.file}-{os.getpid()}", pure=False)
                futures[future] = task
            for future in as_completed(futures):
                task = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # lost worker (KilledWorker), cancelled, ...
                    result = {"index": task.index, "name": task.molecule.name, "file": task.file,
                              "status": "failed", "kind": "error", "retry": True,
                              "reason": f"{type(exc).__name__}: {exc}", "wall_s": None}
                failed += result["status"] != "done"
                record(result)
                bar.update(bar_task, advance=1, status=status())
                future.release()
            return n_workers


@contextlib.contextmanager
def _dask_client(workers: int | None, scheduler: str | None, memory_limit_bytes: int | None):
    """A distributed Client: to ``scheduler`` if given, else to a fresh LocalCluster of
    single-threaded processes with a per-worker memory limit."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        client = Client(scheduler, timeout="30s")
        try:
            workers_info = client.scheduler_info().get("workers", {})
            limits = [w.get("memory_limit") or 0 for w in workers_info.values()]
            yield client, len(workers_info), (min(limits) if limits and min(limits) > 0 else None)
        finally:
            client.close()
        return
    n_workers = int(workers) if workers else (os.cpu_count() or 1)
    if memory_limit_bytes is None:
        import psutil

        memory_limit_bytes = int(LOCAL_MEMORY_FRACTION * psutil.virtual_memory().total / n_workers)
    # no dashboard; the scheduler's small HTTP server (health routes) on a free local port
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           memory_limit=memory_limit_bytes, dashboard_address=None,
                           scheduler_kwargs={"dashboard": False,
                                             "dashboard_address": "127.0.0.1:0"},
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        yield client, n_workers, memory_limit_bytes
    finally:
        client.close()
        cluster.close()
