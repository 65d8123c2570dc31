"""Shared orchestration of the reproduction experiments: data → model → evaluation.

Every accuracy experiment of the suite goes through the same three steps, each cached under the
preset's cache folder (``ctx.preset_cache``) so that a rerun — or another experiment needing the
same thing — continues where the last one stopped:

1. :func:`ensure_dataset` — a labelled dataset of a recipe (``datasets/<recipe>.toml``) at a recipe
   preset, with optional overrides of its ``source`` / ``labels`` / ``splits`` tables. Labels go
   through :func:`mofdft_jax.data.generate.generate_dataset`, which is resumable shard by shard.
   The folder name carries a hash of the resolved recipe, so different overrides never share a
   folder. ``only_split`` labels just the molecules of one split (e.g. the held-out test
   conformers of a shipped model) — the split is computed on the *whole* recipe, exactly as the
   trainer's split of the fully labelled dataset.
2. :func:`ensure_checkpoint` — a learned functional trained on a dataset for a
   (model config, target, ablation switches, seed, training options) combination, through
   ``mofdft train``'s :func:`~mofdft_jax.commands.train.run_train` (resumable epoch by epoch);
   a finished run leaves ``STEM.done.json`` and is not touched again. ``shipped:NAME`` names a
   checkpoint shipped in ``mofdft_jax/checkpoints/``.
3. :func:`evaluate` — OFDFT on test molecules for a list of (functional, initial guess) runs with
   the paper's protocol (spec §4.4–§4.6, §5.1): projected gradient descent for ``steps`` steps, the
   reported step chosen by the IID rule (smallest single-step energy change) or the OOD rule, the
   energy against the KS total energy of the labels and the Hellmann–Feynman forces against those
   of the fitted KS density p*. One tidy row per (molecule, run); results are cached per molecule
   and run (``evals/``), so the density-quality experiment reuses the solves of the accuracy
   experiment.

Metrics of spec §5.1 on the tidy frame: :func:`absolute_mae`, :func:`relative_to_reference`,
:func:`isomer_pair_errors`.

``mofdft reproduce --force`` (``ctx.force``) recomputes the evaluations, never the labels or the
trained models: delete ``<cache>/<preset>/datasets`` or ``models`` for that.

Determinism: labels are byte-identical per recipe, training is bit-identical per seed, the solver
is deterministic on a given machine; only the wall-time columns change between reruns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

#: Bump when the evaluation protocol changes, so cached evaluations are not reused.
EVAL_CACHE_VERSION = 1
#: Grids padded to a multiple of this many blocks and of this many significant functions per
#: block: conformers share one compiled solver.
GRID_BLOCK_MULTIPLE = 16
GRID_FUNCTION_MULTIPLE = 32
#: The classical kinetic functionals of Fig. 2a and their labels (spec §5.2; code names §6.4).
CLASSICAL_LABELS = {"tf": "TF", "tf+1/9vw": "TF+1/9vW", "tf+vw": "TF+vW", "apbe": "APBE"}
#: Columns of the tidy evaluation frame (one row per molecule and run).
EVAL_COLUMNS = [
    "dataset", "file", "molecule", "formula", "n_atoms", "conformer_id", "isomer_group",
    "method", "target", "init", "steps", "lr", "rule", "energy_ha", "energy_ks_ha",
    "energy_error_kcal", "initial_energy_error_kcal", "force_mae_kcal_per_angstrom",
    "chosen_step", "status", "proj_grad_norm", "setup_wall_s", "solve_wall_s", "wall_s",
    "solve_cpu_s",
]
#: Columns that depend on the machine's speed, not on the numbers (left out of determinism checks).
TIMING_COLUMNS = ("setup_wall_s", "solve_wall_s", "wall_s", "solve_cpu_s")


def _stable_hash(obj, n: int = 12) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def _write_json_atomic(path: Path, data) -> None:
    from mofdft_jax.atomic_io import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def _console(progress: bool):
    from rich.console import Console

    return Console(stderr=True, quiet=not progress)


# =================================================================================================
# 1. datasets
# =================================================================================================


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A recipe at a preset, with overrides merged into its tables.

    Attributes:
      recipe: shipped recipe name (``datasets/<recipe>.toml``) or a path to a recipe file.
      preset: the recipe preset (``quick``/``cpu``/``paper``).
      source, labels, splits: overrides merged key by key into the recipe's tables (after the
        preset), e.g. ``source = {count = 4}``.
    """

    recipe: str
    preset: str
    source: dict = dataclasses.field(default_factory=dict)
    labels: dict = dataclasses.field(default_factory=dict)
    splits: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_config(cls, table: dict) -> "DatasetSpec":
        """From a config table ``{recipe, preset, source?, labels?, splits?}``."""
        unknown = sorted(set(table) - {"recipe", "preset", "source", "labels", "splits"})
        if unknown:
            raise ValueError(f"dataset spec: unknown key {unknown[0]!r}")
        return cls(recipe=str(table["recipe"]), preset=str(table["preset"]),
                   source=dict(table.get("source", {})), labels=dict(table.get("labels", {})),
                   splits=dict(table.get("splits", {})))

    def resolve(self):
        """The :class:`~mofdft_jax.data.recipes.Recipe` with the overrides applied."""
        from mofdft_jax.data.recipes import _merge, load_recipe

        recipe = load_recipe(self.recipe, self.preset)
        return dataclasses.replace(recipe, source=_merge(recipe.source, self.source),
                                   labels=_merge(recipe.labels, self.labels),
                                   splits=_merge(recipe.splits, self.splits))

    def key(self) -> str:
        """Folder name: ``<recipe>-<preset>-<hash of the resolved source/labels/splits>``."""
        recipe = self.resolve()
        digest = _stable_hash({"source": recipe.source, "labels": recipe.labels,
                               "splits": recipe.splits})
        return f"{recipe.name}-{self.preset}-{digest}"


@dataclasses.dataclass(frozen=True)
class DatasetHandle:
    """A labelled dataset folder and what the experiments need to know about it.

    Attributes:
      spec: the :class:`DatasetSpec` it was made from.
      path: the dataset folder (``manifest.json`` + shards).
      name: recipe name.
      files: completed shard files in recipe order.
      splits: ``{"train"|"val"|"test": [files]}`` restricted to completed shards.
      fingerprint: SHA-256 over label settings and the completed shards' checksums.
      label_settings: the settings every shard was labelled with.
      failures: molecules whose labelling failed (name, reason).
      wall_s: wall time of this call (labelling included).
    """

    spec: DatasetSpec
    path: Path
    name: str
    files: tuple
    splits: dict
    fingerprint: str
    label_settings: dict
    failures: tuple
    wall_s: float

    def open(self):
        """The :class:`~mofdft_jax.data.loader.Dataset` (manifest + shards)."""
        from mofdft_jax.data.loader import open_dataset

        return open_dataset(self.path)


def recipe_splits(recipe, tasks) -> dict[str, list[str]]:
    """The split of *all* molecules of a recipe (as :func:`mofdft_jax.data.splits.make_splits`
    computes it on the fully labelled dataset): ``{name: [shard files]}``."""
    from mofdft_jax.data.splits import DEFAULT_FRACTIONS, SPLIT_NAMES, split_groups

    fractions = tuple(recipe.splits.get("fractions", DEFAULT_FRACTIONS))
    seed = int(recipe.splits.get("seed", 0))
    group_by = recipe.splits.get("group_by")
    names = SPLIT_NAMES[: len(fractions)]
    keys = ([json.dumps(t.meta[group_by]) for t in tasks] if group_by
            else [t.file for t in tasks])
    index = split_groups(keys, fractions, seed, names)
    return {name: sorted(tasks[i].file for i in idx) for name, idx in index.items()}


def dataset_fingerprint(manifest: dict) -> str:
    """SHA-256 over the label-settings hash and (file, sha256) of every completed shard."""
    record = {"settings": manifest.get("settings_hash"),
              "shards": sorted((f, e["sha256"]) for f, e in manifest["shards"].items())}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def ensure_dataset(ctx, spec: DatasetSpec, *, only_split: str | None = None,
                   max_molecules: int | None = None, include_reference: bool = False,
                   workers: int | None = None) -> DatasetHandle:
    """Label the molecules of ``spec`` that have no shard yet (resumable) and describe the folder.

    Args:
      ctx: the :class:`~reproduce.runner.RunContext` (cache folder, preset, progress, workers).
      spec: recipe, preset and overrides.
      only_split: label only the molecules of this split of the whole recipe (``"test"``: the
        held-out molecules of a model trained on the full recipe), in a folder of their own.
      max_molecules: label at most this many of the selected molecules (recipe order; a later
        call with a larger number continues in the same folder).
      include_reference: also label the equilibrium structure (``conformer_id == -1``) of a
        conformer recipe, the reference of relative energies, whatever its split.
      workers: label workers (``ctx.workers`` wins; ``0`` labels in this process).

    Returns:
      A :class:`DatasetHandle`; ``splits`` holds only completed shards.
    """
    from mofdft_jax.data.generate import generate_dataset
    from mofdft_jax.data.loader import open_dataset
    from mofdft_jax.data.recipes import recipe_tasks
    from mofdft_jax.data.splits import make_splits

    t0 = time.perf_counter()
    recipe = spec.resolve()
    tasks = recipe_tasks(recipe)
    full_splits = recipe_splits(recipe, tasks)
    folder = spec.key()
    pool = tasks
    if only_split is not None:
        # a folder of its own: the manifest lists exactly the split's molecules (+ reference)
        wanted = set(full_splits[only_split])
        pool = [t for t in tasks if t.file in wanted
                or (include_reference and t.meta.get("conformer_id") == -1)]
        folder += f"-{only_split}" + ("+ref" if include_reference else "")
    limit = None
    if max_molecules is not None:
        # the first max_molecules non-reference molecules (in recipe order), reference included
        count, limit = 0, 0
        for limit, t in enumerate(pool, start=1):
            count += not (include_reference and t.meta.get("conformer_id") == -1)
            if count >= int(max_molecules):
                break
        if include_reference:
            ref = [i for i, t in enumerate(pool) if t.meta.get("conformer_id") == -1]
            limit = max([limit] + [i + 1 for i in ref])
    selected = pool if limit is None else pool[:limit]
    out_dir = Path(ctx.preset_cache) / "datasets" / folder
    n_workers = ctx.workers if ctx.workers is not None else workers
    if n_workers is None:
        n_workers = 0 if len(selected) <= 8 else min(2, os.cpu_count() or 1)
    generate_dataset(pool, recipe.label_settings(), out_dir, recipe=recipe.to_dict(),
                     workers=n_workers, limit=limit, progress=ctx.progress)
    dataset = open_dataset(out_dir)
    manifest = dataset.manifest
    selected_files = {t.file for t in selected}
    done = set(dataset.files)
    if only_split is None and done >= {t.file for t in tasks} - set(manifest["failures"]):
        splits = make_splits(dataset)  # the whole recipe labelled: exactly the trainer's split
    else:
        splits = {name: [f for f in files if f in done] for name, files in full_splits.items()}
    failures = tuple({"name": v.get("name"), "file": f, "reason": v.get("reason")}
                     for f, v in sorted(manifest["failures"].items()) if f in selected_files)
    return DatasetHandle(spec=spec, path=out_dir, name=recipe.name, files=tuple(dataset.files),
                         splits=splits, fingerprint=dataset_fingerprint(manifest),
                         label_settings=dict(dataset.label_settings), failures=failures,
                         wall_s=time.perf_counter() - t0)


# =================================================================================================
# 2. checkpoints
# =================================================================================================

#: Ablation switches of ``mofdft train`` (spec §5.6, SI Tables S8/S9).
ABLATIONS = ("no_grad_labels", "ground_state_only", "no_local_frames", "no_reparam")
#: Training options passed through to :func:`mofdft_jax.commands.train.run_train`.
TRAIN_OPTIONS = ("epochs", "batch_size", "lr", "warmup", "patience", "loss_weights", "norm",
                 "dropout", "filter_kcal")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What to train: model config, target, ablation switches and training options.

    Attributes:
      config: model config name (``tiny``, ``small``, ``paper``, ``paper_ethanol``).
      target: ``ts_res``, ``txc`` or ``tot``.
      ablations: the switched-on ablations (a subset of :data:`ABLATIONS`).
      train: training options (keys of :data:`TRAIN_OPTIONS`), ``mofdft train`` defaults otherwise.
    """

    config: str = "small"
    target: str = "ts_res"
    ablations: tuple = ()
    train: tuple = ()  # sorted (key, value) pairs (hashable)

    @classmethod
    def from_config(cls, table: dict, *, target: str | None = None,
                    ablations: Iterable[str] = ()) -> "ModelSpec":
        """From a config table ``{config, target?, <train options>}`` plus ablations."""
        table = dict(table)
        config = str(table.pop("config", "small"))
        target = str(target or table.pop("target", "ts_res"))
        table.pop("target", None)
        unknown = sorted(set(table) - set(TRAIN_OPTIONS))
        if unknown:
            raise ValueError(f"model spec: unknown training option {unknown[0]!r} "
                             f"(known: {', '.join(TRAIN_OPTIONS)})")
        abl = tuple(sorted(set(ablations)))
        bad = sorted(set(abl) - set(ABLATIONS))
        if bad:
            raise ValueError(f"unknown ablation {bad[0]!r}; known: {', '.join(ABLATIONS)}")
        return cls(config=config, target=target, ablations=abl, train=tuple(sorted(table.items())))

    def tag(self) -> str:
        """Short readable name: ``<config>-<target>[-<ablations>]``."""
        return "-".join([self.config, self.target, *self.ablations])


@dataclasses.dataclass(frozen=True)
class CheckpointHandle:
    """A learned-functional checkpoint: its stem (``STEM.eqx`` + ``STEM.json``) and how it was made.

    Attributes:
      stem: checkpoint stem (accepted by :func:`mofdft_jax.model.checkpoint.load_checkpoint`).
      label: row label in the tables.
      weights_sha256: checksum of the weights (identifies the model in caches).
      summary: the training summary without per-epoch history (for a checkpoint not trained by
        :func:`ensure_checkpoint`: config, training molecules and epochs from its metadata).
      shipped: whether it is a checkpoint shipped with the package.
    """

    stem: Path
    label: str
    weights_sha256: str
    summary: dict
    shipped: bool = False


def shipped_checkpoint_dir() -> Path:
    """``mofdft_jax/checkpoints/``: checkpoints shipped with the package."""
    import mofdft_jax

    return Path(mofdft_jax.__file__).resolve().parent / "checkpoints"


def resolve_checkpoint(name: str, label: str | None = None) -> CheckpointHandle:
    """A checkpoint named ``shipped:NAME`` (``mofdft_jax/checkpoints/NAME``) or by path."""
    from mofdft_jax.model.checkpoint import checkpoint_paths, read_checkpoint_metadata

    shipped = name.startswith("shipped:")
    path = shipped_checkpoint_dir() / name.split(":", 1)[1] if shipped else Path(name)
    weights, meta_path = checkpoint_paths(path)
    if not meta_path.is_file():
        available = sorted(p.stem for p in shipped_checkpoint_dir().glob("*.json"))
        raise FileNotFoundError(f"{meta_path}: no such checkpoint"
                                + (f" (shipped: {', '.join(available)})" if shipped else ""))
    meta = read_checkpoint_metadata(path)
    extra = meta.get("extra", {})
    summary = {"config": extra.get("model_config_name"),
               "n_train_molecules": extra.get("splits", {}).get("train"),
               "epochs": extra.get("epochs_completed"), "dataset": extra.get("dataset")}
    return CheckpointHandle(stem=weights.with_suffix(""), label=label or weights.stem,
                            weights_sha256=str(meta.get("weights_sha256", "")), summary=summary,
                            shipped=shipped)


def ensure_checkpoint(ctx, data: DatasetHandle, spec: ModelSpec, *, seed: int | None = None,
                      label: str | None = None) -> CheckpointHandle:
    """Train ``spec`` on ``data`` unless a finished run exists (resumable; spec §3.3, §5.6).

    The checkpoint lives at ``<preset cache>/models/<dataset key>-<spec tag>-s<seed>-<hash>``, the
    hash covering the dataset fingerprint, the spec and the seed. ``run_train`` resumes an
    interrupted run from its last epoch; ``STEM.done.json`` marks a finished one.
    """
    from mofdft_jax.commands.train import run_train
    from mofdft_jax.model.checkpoint import read_checkpoint_metadata

    seed = ctx.seed if seed is None else int(seed)
    key = _stable_hash({"data": data.fingerprint, "spec": dataclasses.asdict(spec),
                        "seed": seed})
    stem = Path(ctx.preset_cache) / "models" / f"{data.spec.key()}-{spec.tag()}-s{seed}-{key}"
    done = stem.with_name(stem.name + ".done.json")
    label = label or spec.tag()
    if done.is_file():
        summary = json.loads(done.read_text())
    else:
        stem.parent.mkdir(parents=True, exist_ok=True)
        options = dict(spec.train)
        summary = run_train(str(data.path), config=spec.config, target=spec.target,
                            out=str(stem), seed=seed, console=_console(ctx.progress),
                            **{a: True for a in spec.ablations}, **options)
        summary = {k: v for k, v in summary.items() if k != "history"}
        _write_json_atomic(done, summary)
    meta = read_checkpoint_metadata(stem)
    return CheckpointHandle(stem=stem, label=label,
                            weights_sha256=str(meta.get("weights_sha256", "")), summary=summary)


# =================================================================================================
# 3. evaluation
# =================================================================================================


@dataclasses.dataclass(frozen=True)
class Method:
    """An energy functional to evaluate: a classical kinetic functional or a learned checkpoint.

    Attributes:
      name: row label (``"TF+1/9vW"``, ``"M-OFDFT"`` …).
      kinetic: classical kinetic functional (``tf``, ``tf+1/9vw``, ``tf+vw``, ``apbe``) with PBE XC.
      checkpoint: a learned functional (``None`` for classical).
      lr: solver step size (``None``: the checkpoint's default, 1e-3 for classical; spec §4.4).
    """

    name: str
    kinetic: str | None = None
    checkpoint: CheckpointHandle | None = None
    lr: float | None = None

    def __post_init__(self):
        if (self.kinetic is None) == (self.checkpoint is None):
            raise ValueError("a Method is either classical (kinetic=...) or learned "
                             "(checkpoint=...)")

    @property
    def learned(self) -> bool:
        return self.checkpoint is not None

    def identity(self) -> dict:
        """What determines this method's numbers (cache key material)."""
        if self.learned:
            return {"learned": self.checkpoint.weights_sha256, "lr": self.lr}
        return {"kinetic": self.kinetic, "lr": self.lr}


def classical_method(kinetic: str, lr: float | None = None) -> Method:
    """The classical functional ``kinetic`` + PBE XC (spec §5.2 Fig. 2a baselines)."""
    from mofdft_jax.functionals import KINETIC_FUNCTIONALS

    if kinetic not in KINETIC_FUNCTIONALS:
        raise ValueError(f"unknown kinetic functional {kinetic!r}")
    return Method(name=CLASSICAL_LABELS.get(kinetic, kinetic), kinetic=kinetic, lr=lr)


def learned_method(checkpoint: CheckpointHandle, name: str | None = None,
                   lr: float | None = None) -> Method:
    """A learned functional (its target decides the added terms, spec §3.4)."""
    return Method(name=name or checkpoint.label, checkpoint=checkpoint, lr=lr)


@dataclasses.dataclass(frozen=True)
class Run:
    """One evaluation setting: a method from an initial guess (spec §4.3).

    ``files``: evaluate this run only on these shard files (``None``: on all files of the
    :func:`evaluate` call), so that runs on a subset share the molecules' integrals with the rest.
    """

    method: Method
    init: str
    files: frozenset[str] | None = None

    def applies_to(self, file: str) -> bool:
        return self.files is None or file in self.files


@dataclasses.dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes:
      frame: tidy DataFrame, :data:`EVAL_COLUMNS`, one row per (molecule, run).
      coeffs: ``{(method name, init, file): (naux,) reported density coefficients}``.
      cached: how many (molecule, run) results came from the evaluation cache.
    """

    frame: pd.DataFrame
    coeffs: dict
    cached: int = 0


_FUNCTIONALS: dict = {}
_CLASSICAL_FNS: dict = {}


def load_functional_cached(checkpoint: CheckpointHandle):
    """``(LearnedFunctional, CheckpointInfo)``, loaded once per process per checkpoint."""
    from mofdft_jax.model.checkpoint import load_checkpoint

    key = (str(checkpoint.stem), checkpoint.weights_sha256)
    if key not in _FUNCTIONALS:
        _FUNCTIONALS[key] = load_checkpoint(checkpoint.stem)
    return _FUNCTIONALS[key]


def _classical_energy_fn(kinetic: str, xc: str):
    """One energy function object per (kinetic, xc): the jitted solver is compiled once."""
    from mofdft_jax.solver import make_energy_fn

    if (kinetic, xc) not in _CLASSICAL_FNS:
        _CLASSICAL_FNS[(kinetic, xc)] = make_energy_fn(kinetic, xc=xc)[0]
    return _CLASSICAL_FNS[(kinetic, xc)]


def _eval_cache_path(cache_dir: Path, data: DatasetHandle, file: str, run: Run, steps: int,
                     rule: str, lr: float) -> Path:
    key = _stable_hash({"v": EVAL_CACHE_VERSION, "data": data.fingerprint, "file": file,
                        "method": run.method.identity(), "init": run.init, "steps": steps,
                        "rule": rule, "lr": lr}, n=20)
    return Path(cache_dir) / "evals" / f"{key}.npz"


def _read_eval_cache(path: Path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            return json.loads(str(npz["row"])), np.asarray(npz["coeffs"])
    except (OSError, ValueError, KeyError):
        return None


def _write_eval_cache(path: Path, row: dict, coeffs: np.ndarray) -> None:
    from mofdft_jax.atomic_io import write_bytes_atomic

    buf = io.BytesIO()
    np.savez(buf, row=np.asarray(json.dumps(row, default=float)), coeffs=np.asarray(coeffs))
    write_bytes_atomic(path, buf.getvalue())


def _meta_value(meta: dict, key: str):
    value = meta.get(key)
    return value if value is not None else (np.nan if key == "conformer_id" else "")


def evaluate(data: DatasetHandle, files: Sequence[str], runs: Sequence[Run], *, steps: int = 1000,
             rule: str = "iid", gtol: float = 1e-4, cache_dir: Path | None = None,
             refresh: bool = False, progress: bool = True,
             on_row: Callable[[dict], None] | None = None) -> Evaluation:
    """OFDFT on ``files`` of ``data`` for every run, with the paper's protocol (spec §4–§5.1).

    Per molecule the integrals are built once (orbital basis and grid level of the dataset's labels;
    grid padded to :data:`GRID_BLOCK_MULTIPLE` blocks so conformers share compiled solvers), then
    each run: initial guess (``minao``, ``huckel``, ``projminao`` …) → ``steps`` projected-gradient
    steps → reported step by ``rule`` → Hellmann–Feynman forces of the reported density.

    Errors: ``energy_error_kcal`` = E_OFDFT − E_KS (total energies, kcal/mol; E_KS the converged KS
    energy of the labels); ``force_mae_kcal_per_angstrom`` = mean |ΔF| over all Cartesian components
    against the HF forces of the fitted KS density p* (spec §4.6); ``initial_energy_error_kcal``:
    the same for the initial density (state 0).

    Args:
      data: the dataset (:func:`ensure_dataset`).
      files: shard files to evaluate.
      runs: (method, init) pairs.
      steps, rule, gtol: solver settings (paper: 1000 steps, IID rule in-scale).
      cache_dir: where per-(molecule, run) results are cached (``<cache_dir>/evals``); ``None``
        disables the cache; ``refresh`` recomputes and overwrites.
      progress: rich progress on stderr.
      on_row: called with each finished row.

    Returns:
      An :class:`Evaluation`.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mofdft_jax.config import ensure_x64

    ensure_x64()
    dataset = data.open()
    rows, coeffs, cached = [], {}, 0
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                   console=_console(progress), transient=True, disable=not progress)
    with bar:
        total = sum(run.applies_to(f) for f in files for run in runs)
        task = bar.add_task(f"OFDFT on {data.name}", total=total, info="")
        for file in files:
            labels = None
            todo = []
            for run in runs:
                if not run.applies_to(file):
                    continue
                lr = _run_lr(run)
                path = (_eval_cache_path(cache_dir, data, file, run, steps, rule, lr)
                        if cache_dir is not None else None)
                hit = _read_eval_cache(path) if (path is not None and path.is_file()
                                                 and not refresh) else None
                if hit is not None:
                    row, p = hit
                    row["method"] = run.method.name  # the cache is keyed by identity, not label
                    rows.append(row)
                    coeffs[(run.method.name, run.init, file)] = p
                    cached += 1
                    bar.advance(task)
                    if on_row is not None:
                        on_row(row)
                else:
                    todo.append((run, lr, path))
            if not todo:
                continue
            labels = dataset.read(file)
            meta = dataset.meta(file)
            setup = _MoleculeSetup(labels, data.label_settings,
                                   learned=any(r.method.learned for r, _, _ in todo),
                                   grid=any(_needs_grid(r.method) for r, _, _ in todo))
            for run, lr, path in todo:
                bar.update(task, info=f"{labels.molecule.name}: {run.method.name} from {run.init}")
                row, p = setup.run(run, lr=lr, steps=steps, rule=rule, gtol=gtol)
                row.update({"dataset": data.name, "file": file,
                            "conformer_id": _meta_value(meta, "conformer_id"),
                            "isomer_group": _meta_value(meta, "isomer_group")})
                row = {c: row.get(c) for c in EVAL_COLUMNS}
                if path is not None:
                    _write_eval_cache(path, row, p)
                rows.append(row)
                coeffs[(run.method.name, run.init, file)] = p
                bar.advance(task)
                if on_row is not None:
                    on_row(row)
    frame = pd.DataFrame(rows, columns=EVAL_COLUMNS)
    return Evaluation(frame=frame, coeffs=coeffs, cached=cached)


def _run_lr(run: Run) -> float:
    """Step size of a run: the method's, else the checkpoint's default, else 1e-3 (spec §4.4)."""
    if run.method.lr is not None:
        return float(run.method.lr)
    if run.method.learned:
        _, info = load_functional_cached(run.method.checkpoint)
        return float(info.extra.get("solver_defaults", {}).get("lr", 1e-3))
    return 1e-3


def _needs_grid(method: Method) -> bool:
    """Whether ``method``'s energy has grid terms: classical functionals and ``ts_res`` models
    (``txc`` and ``tot`` models are grid-free, spec §3.4)."""
    if not method.learned:
        return True
    functional, _ = load_functional_cached(method.checkpoint)
    return functional.target == "ts_res"


_HF_FORCES_JIT = None


def _hf_forces(coeffs, bundle) -> np.ndarray:
    """:func:`mofdft_jax.solver.hf_forces` compiled once per molecule shape (the eager version
    compiles each of its operations anew for every new size)."""
    global _HF_FORCES_JIT
    if _HF_FORCES_JIT is None:
        import jax

        from mofdft_jax.solver import hf_forces

        _HF_FORCES_JIT = jax.jit(hf_forces)
    return np.asarray(_HF_FORCES_JIT(coeffs, bundle))


class _MoleculeSetup:
    """Integrals of one labelled molecule, shared by all runs on it (host world).

    The quadrature grid is built only when a run needs grid terms (``grid``); it is padded to
    :data:`GRID_BLOCK_MULTIPLE` blocks and :data:`GRID_FUNCTION_MULTIPLE` functions per block.
    """

    def __init__(self, labels, label_settings: dict, *, learned: bool, grid: bool = True):
        from mofdft_jax.qchem.basis import make_auxmol, make_mol
        from mofdft_jax.qchem.integrals import build_integral_bundle

        t0 = time.perf_counter()
        self.labels = labels
        self.xc = str(label_settings.get("xc", "pbe")).lower()
        self.basis = label_settings["basis"]
        self.grid_level = int(label_settings["grid_level"])
        self.mol = make_mol(labels.molecule, self.basis)
        self.auxmol = make_auxmol(self.mol)
        self.bundle = build_integral_bundle(
            self.mol, self.auxmol, grid_level=self.grid_level if grid else None,
            with_forces=True, with_overlap=learned,
            grid_padding=(GRID_BLOCK_MULTIPLE, GRID_FUNCTION_MULTIPLE))
        self._geometries: dict = {}
        self.setup_wall_s = time.perf_counter() - t0

    def _geometry(self, functional):
        key = (functional.use_local_frames, functional.use_reparam)
        if key not in self._geometries:
            self._geometries[key] = functional.prepare(self.bundle)
        return self._geometries[key]

    def run(self, run: Run, *, lr: float, steps: int, rule: str, gtol: float):
        from mofdft_jax.commands.solve import PYSCF_XC
        from mofdft_jax.qchem.guesses import initial_guess
        from mofdft_jax.qchem.settings import PAPER_SETTINGS
        from mofdft_jax.solver import solve
        from mofdft_jax.units import HA_PER_BOHR_TO_KCAL_PER_ANGSTROM, HARTREE_TO_KCAL

        t0 = time.perf_counter()
        settings = PAPER_SETTINGS.replace(basis=self.basis, grid_level=self.grid_level,
                                          xc=PYSCF_XC.get(self.xc, self.xc))
        method = run.method
        if method.learned:
            from mofdft_jax.commands.learned_solve import learned_energy_fn
            from mofdft_jax.solver.learned import make_learned_inputs

            functional, _ = load_functional_cached(method.checkpoint)
            geometry = self._geometry(functional)
            guess = initial_guess(run.init, self.mol, self.auxmol, settings=settings,
                                  functional=functional, bundle=self.bundle, geometry=geometry)
            energy_fn = learned_energy_fn(functional, self.xc)
            inputs = make_learned_inputs(functional, self.bundle, geometry)
            target = functional.target
        else:
            guess = initial_guess(run.init, self.mol, self.auxmol, settings=settings)
            energy_fn = _classical_energy_fn(method.kinetic, self.xc)
            inputs = self.bundle
            target = "classical"
        setup_s = time.perf_counter() - t0 + self.setup_wall_s
        t1, c1 = time.perf_counter(), time.process_time()
        result = solve(energy_fn, guess.coeffs, inputs, steps=steps, lr=lr, gtol=gtol, rule=rule)
        solve_s, solve_cpu_s = time.perf_counter() - t1, time.process_time() - c1
        p = np.asarray(result.coeffs)
        forces = _hf_forces(result.coeffs, self.bundle)
        e_ks = float(self.labels.ks_energy["e_tot"])
        force_err = np.abs(forces - np.asarray(self.labels.hf_forces_ref))
        row = {
            "molecule": self.labels.molecule.name, "formula": self.labels.molecule.formula,
            "n_atoms": int(self.mol.natm), "method": method.name, "target": target,
            "init": run.init, "steps": int(steps), "lr": float(lr), "rule": rule,
            "energy_ha": float(result.energy), "energy_ks_ha": e_ks,
            "energy_error_kcal": (float(result.energy) - e_ks) * HARTREE_TO_KCAL,
            "initial_energy_error_kcal": (float(result.trajectory.energy[0]) - e_ks)
            * HARTREE_TO_KCAL,
            "force_mae_kcal_per_angstrom": float(np.mean(force_err))
            * HA_PER_BOHR_TO_KCAL_PER_ANGSTROM,
            "chosen_step": int(result.chosen_step), "status": str(result.status),
            "proj_grad_norm": float(result.proj_grad_norm),
            "setup_wall_s": setup_s, "solve_wall_s": solve_s,
            "wall_s": setup_s + solve_s, "solve_cpu_s": solve_cpu_s,
        }
        return row, p


# =================================================================================================
# metrics (spec §5.1)
# =================================================================================================

#: Columns identifying one evaluation setting in the tidy frame.
SETTING = ["dataset", "method", "init"]


def absolute_mae(frame: pd.DataFrame, by: Sequence[str] = SETTING) -> pd.DataFrame:
    """Absolute energy MAE (kcal/mol) and HF-force MAE (kcal/mol/Å) per setting (spec §5.1)."""
    grouped = frame.groupby(list(by), sort=False)
    out = grouped.agg(n=("file", "size"),
                      energy_mae_kcal=("energy_error_kcal", lambda x: float(np.mean(np.abs(x)))),
                      force_mae_kcal_per_angstrom=("force_mae_kcal_per_angstrom", "mean"),
                      solve_wall_s=("solve_wall_s", "mean"))
    return out.reset_index()


def relative_to_reference(frame: pd.DataFrame, reference_file: str,
                          by: Sequence[str] = SETTING) -> pd.DataFrame:
    """Relative-energy errors against a reference structure (ethanol: its equilibrium, spec §5.1).

    For each setting and molecule i ≠ ref: (E_i − E_ref)_OFDFT − (E_i − E_ref)_KS in kcal/mol.

    Returns:
      Rows ``by + [file, rel_error_kcal]`` (the reference itself excluded).
    """
    out = []
    for key, group in frame.groupby(list(by), sort=False):
        ref = group[group["file"] == reference_file]
        if ref.empty:
            continue
        e_ref, k_ref = float(ref["energy_ha"].iloc[0]), float(ref["energy_ks_ha"].iloc[0])
        from mofdft_jax.units import HARTREE_TO_KCAL

        for r in group[group["file"] != reference_file].itertuples(index=False):
            rel = ((r.energy_ha - e_ref) - (r.energy_ks_ha - k_ref)) * HARTREE_TO_KCAL
            out.append({**dict(zip(by, key)), "file": r.file, "rel_error_kcal": rel})
    return pd.DataFrame(out, columns=[*by, "file", "rel_error_kcal"])


def isomer_pair_errors(frame: pd.DataFrame, group_col: str = "isomer_group",
                       by: Sequence[str] = SETTING) -> pd.DataFrame:
    """Relative-energy errors between every pair of isomers (QM9 C7H10O2 protocol, spec §5.1).

    Within each isomer group of each setting, every unordered pair i < j contributes
    |(E_i − E_j)_OFDFT − (E_i − E_j)_KS| (ordered pairs give the same MAE).

    Returns:
      Rows ``by + [isomer_group, file_i, file_j, rel_error_kcal]``.
    """
    from mofdft_jax.units import HARTREE_TO_KCAL

    out = []
    for key, group in frame.groupby(list(by), sort=False):
        for iso, members in group.groupby(group_col, sort=True):
            if not iso or len(members) < 2:
                continue
            m = members.sort_values("file")
            e, k, f = m["energy_ha"].to_numpy(), m["energy_ks_ha"].to_numpy(), m["file"].tolist()
            for i in range(len(m)):
                for j in range(i + 1, len(m)):
                    err = ((e[i] - e[j]) - (k[i] - k[j])) * HARTREE_TO_KCAL
                    out.append({**dict(zip(by, key)), group_col: iso, "file_i": f[i],
                                "file_j": f[j], "rel_error_kcal": float(err)})
    return pd.DataFrame(out, columns=[*by, group_col, "file_i", "file_j", "rel_error_kcal"])


def describe_workload(data: DatasetHandle, n_eval: int, *, steps: int) -> str:
    """One line naming the dataset, label settings and evaluation size (for claims.csv)."""
    s = data.label_settings
    return (f"{data.name} ({data.spec.preset} recipe, {len(data.files)} labelled molecules; "
            f"PBE/{s.get('basis')}, grid level {s.get('grid_level')}); {n_eval} test molecules, "
            f"{steps} solver steps" + ("" if steps == 1000 else " (paper: 1000)"))


# =================================================================================================
# experiment plumbing
# =================================================================================================

#: Test-only preset: every experiment config has a ``[micro]`` section run by the test suite.
MICRO_PRESET = "micro"


def load_experiment_config(experiment: str, preset: str) -> dict:
    """:func:`reproduce.runner.load_config`, plus the test-only ``micro`` preset."""
    import tomllib

    from reproduce.runner import CONFIG_DIR, load_config

    if preset != MICRO_PRESET:
        return load_config(experiment, preset)
    path = CONFIG_DIR / f"{experiment}.toml"
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    if MICRO_PRESET not in data:
        raise ValueError(f"{path}: no [{MICRO_PRESET}] section")
    return {**data.get("common", {}), **data[MICRO_PRESET]}


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished child processes (label
    workers), seconds: on a shared machine a better measure of the work than wall time."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def finish_experiment(ctx, experiment: str, config: dict, *, t0: float, table: pd.DataFrame,
                      claims: pd.DataFrame, data_fingerprints: dict, intro: str = "",
                      figures: dict | None = None, extra_tables: dict | None = None,
                      extra_info: dict | None = None, cpu0: float | None = None) -> Path:
    """Write the results folder (contract of :mod:`reproduce.common`) with a ``run_info.json``
    carrying the runner's ``config_hash`` (skip-if-done), the experiment's config, and the CPU
    time since ``cpu0`` (:func:`cpu_seconds` at the start) beside the wall time."""
    from reproduce.common import collect_run_info, write_experiment
    from reproduce.runner import config_hash

    extra = {"config_hash": config_hash(config, ctx.preset, ctx.seed), "config": config}
    if cpu0 is not None:
        extra["cpu_s"] = round(cpu_seconds() - cpu0, 1)
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        extra["load_average_at_end"] = [round(x, 2) for x in load] if load else None
    info = collect_run_info(experiment, ctx.preset, {"seed": ctx.seed},
                            time.perf_counter() - t0, data_fingerprints=data_fingerprints,
                            extra={**extra, **(extra_info or {})})
    path = write_experiment(ctx.out_dir, experiment, table, claims, info, markdown_intro=intro,
                            figures=figures, extra_tables=extra_tables)
    if figures:
        import matplotlib.pyplot as plt

        for fig in figures.values():
            plt.close(fig)
    return path


def reference_file(data: DatasetHandle, files: Sequence[str] | None = None) -> str | None:
    """The equilibrium structure of a conformer dataset (``conformer_id == -1``), if labelled."""
    dataset = data.open()
    for f in data.files if files is None else files:
        if dataset.meta(f).get("conformer_id") == -1:
            return f
    return None


def mean_ci95(values) -> tuple[float, float]:
    """Mean and the half-width of its normal 95 % confidence interval (1.96 · s/√n)."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size) if x.size > 1 else float("nan")
    return float(x.mean()), float(half)
