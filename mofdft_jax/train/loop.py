"""The training driver: Adam with warm-up + linear decay, data parallel, resumable (spec §3.3).

:func:`train` fits ``functional.model`` to a :class:`~mofdft_jax.train.data.TrainingSet` with the
losses of :mod:`mofdft_jax.train.losses`:

* **Optimiser** (spec §3.3): Adam with β = (0.95, 0.99), ε = 10⁻⁸; learning rate rising linearly from
  0 to the peak over the warm-up steps, then falling linearly to ``end_lr_fraction`` × peak at the
  last step (paper: peak 10⁻⁴, 30k warm-up steps, batch 256 for ethanol / 128 otherwise, early
  stopping with patience 20). Small runs use a larger peak and a warm-up of a fraction of the run
  (:data:`TRAIN_PRESETS`).
* **Epochs**: the steps are shuffled by a permutation that depends only on ``(seed, epoch)``; the
  last short batch is padded with zero-weight rows so every batch has the same shape (one
  compilation). Dropout keys are ``fold_in(PRNGKey(seed), step)``. After every epoch the
  validation loss and energy MAE (kcal/mol) are computed; the best model (lowest validation loss)
  is the result; training stops after ``patience`` epochs without improvement.
* **Data parallel**: the batch axis is sharded over the local devices with ``jax.sharding``
  (``Mesh(devices, ("batch",))``), parameters and optimiser state are replicated; XLA inserts the
  gradient all-reduce. With one device the same code runs unsharded. The batch size is rounded up
  to a multiple of the device count.
* **Checkpoints** (when ``out`` is given): the best functional goes to ``OUT.eqx``/``OUT.json``
  (:func:`mofdft_jax.model.checkpoint.save_checkpoint`, atomic) each time it improves; the
  training state (current weights, optimiser state, best weights, step, epoch, best validation
  loss, patience counter, history) after every epoch as one atomic unit: the arrays go to a
  content-addressed blob ``OUT.train.<sha256[:16]>.eqx``, then the manifest ``OUT.train.json``
  (the scalars, the blob's name and its SHA-256) replaces the old one in a single ``os.replace``,
  and only then is the previous blob deleted. An interrupt at any instant (Ctrl-C, SIGKILL) leaves
  either the old or the new complete state (:func:`save_train_state`). Rerunning with the same
  arguments resumes from the last completed epoch and ends with bit-identical weights to an
  uninterrupted run (deterministic order, keys and arithmetic).
  Resuming with a different model config, training config, target, adapter switches or training
  data is refused with :class:`TrainStateError` naming what differs.

``train_step`` is the only ``jit``-compiled function (plus the evaluation step); the data are its
arguments, never closed over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mofdft_jax.config import ensure_x64
from mofdft_jax.density.adapter import AdapterStatistics
from mofdft_jax.atomic_io import write_bytes_atomic
from mofdft_jax.model.checkpoint import checkpoint_paths, save_checkpoint
from mofdft_jax.model.functional import LearnedFunctional
from mofdft_jax.train.data import TrainingSet, epoch_batches, gather_batch
from mofdft_jax.train.losses import NORMS, LossWeights, batch_loss

TRAIN_STATE_FORMAT = "mofdft_jax.train_state"
#: Version 2: the manifest names a content-addressed blob; version 1 (blob ``OUT.train.eqx``) loads.
TRAIN_STATE_VERSION = 2
_READABLE_STATE_VERSIONS = (1, 2)


class TrainStateError(ValueError):
    """A saved training state cannot be resumed with the requested settings."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (spec §3.3).

    Attributes:
      epochs: maximum number of epochs.
      batch_size: labelled steps per batch (rounded up to a multiple of the device count).
      peak_lr: learning rate at the end of the warm-up.
      warmup_steps: warm-up length in optimiser steps; ``None``: ``warmup_fraction`` of the run.
      warmup_fraction: warm-up as a fraction of ``epochs × batches per epoch`` (if no steps given).
      end_lr_fraction: learning rate at the last step, as a fraction of the peak.
      b1, b2, eps: Adam parameters (paper: 0.95, 0.99, 1e-8).
      clip_norm: global gradient-norm clipping (``None``: off; not in the paper).
      patience: early stopping after this many epochs without a better validation loss.
      seed: initialisation, shuffling and dropout seed.
      weights: loss weights ξ (Table S4).
      norm: ``"l2"`` or ``"l1"`` for the gradient and Δp terms.
    """

    epochs: int = 100
    batch_size: int = 32
    peak_lr: float = 5e-4
    warmup_steps: Optional[int] = None
    warmup_fraction: float = 0.05
    end_lr_fraction: float = 0.0
    b1: float = 0.95
    b2: float = 0.99
    eps: float = 1e-8
    clip_norm: Optional[float] = None
    patience: int = 20
    seed: int = 0
    weights: LossWeights = LossWeights()
    norm: str = "l2"

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs must be >= 0, batch_size and patience >= 1")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["weights"] = self.weights.to_dict()
        return out

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


#: ``paper``: spec §3.3 (batch 256 is the ethanol value; 128 for the other sets).
#: ``small``: CPU-sized runs of a few hundred to a few thousand labelled steps.
TRAIN_PRESETS = {
    "paper": TrainConfig(epochs=600, batch_size=256, peak_lr=1e-4, warmup_steps=30_000,
                         patience=20),
    "small": TrainConfig(epochs=200, batch_size=32, peak_lr=5e-4, warmup_fraction=0.05,
                         patience=20),
}


def learning_rate(config: TrainConfig, total_steps: int, step: int) -> float:
    r"""Learning rate of optimiser step ``step`` (0-based): linear warm-up then linear decay.

    .. math::  η(s) = η_{peak} \min(1, (s+1)/n_{warm})\ \text{for}\ s < n_{warm},\quad
               η(s) = η_{peak} + (η_{end} − η_{peak}) \frac{s + 1 − n_{warm}}{n − n_{warm}}

    with n = ``total_steps`` and n_warm = ``warmup_steps`` (or ``warmup_fraction``·n), η_end =
    ``end_lr_fraction``·η_peak. Computed on the host in Python floats and passed to the compiled
    step as an argument, so the compiled code does not depend on the run length.
    """
    total_steps = max(int(total_steps), 1)
    warmup = (config.warmup_steps if config.warmup_steps is not None
              else int(round(config.warmup_fraction * total_steps)))
    warmup = int(min(max(warmup, 1), total_steps))
    s = int(step) + 1
    if s <= warmup:
        return config.peak_lr * s / warmup
    end = config.peak_lr * config.end_lr_fraction
    frac = min((s - warmup) / max(total_steps - warmup, 1), 1.0)
    return config.peak_lr + (end - config.peak_lr) * frac


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam's update direction (β₁, β₂, ε of ``config``; optionally after global-norm clipping),
    without the learning rate: the step multiplies it by −η(s) (:func:`learning_rate`)."""
    adam = optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps)
    if config.clip_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adam)


# ---------------------------------------------------------------------------------------------
# jitted steps (functions of explicit pytrees; the static parts are closed over)
# ---------------------------------------------------------------------------------------------

def _functional(params, static: LearnedFunctional, statistics: AdapterStatistics):
    # every static switch (target, frames, reparametrisation, parity …) carries over unchanged
    return dataclasses.replace(static, model=eqx.combine(params, static.model),
                               statistics=statistics)


_STEP_CACHE: dict = {}


def _cached(kind: str, key: tuple, build):
    """One jitted function per (kind, static functional, settings) in this process: repeated
    :func:`train` calls with the same model structure reuse the compiled code."""
    full = (kind,) + key
    if full not in _STEP_CACHE:
        _STEP_CACHE[full] = build()
    return _STEP_CACHE[full]


def make_train_step(static: LearnedFunctional, optimizer: optax.GradientTransformation,
                    weights: LossWeights, norm: str):
    """``train_step(params, opt_state, statistics, batch, key, lr) -> (params, opt_state, sums)``.

    ``static`` is the functional without its arrays (:func:`_split_functional`); ``lr`` the
    learning rate of this step (a traced scalar).
    """

    def train_step(params, opt_state, statistics, batch, key, lr):
        def loss_fn(p):
            return batch_loss(_functional(p, static, statistics), batch, weights, key=key,
                              inference=False, norm=norm)

        (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        direction, opt_state = optimizer.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, d: p - lr * d, params, direction)
        return params, opt_state, sums

    return jax.jit(train_step)


def make_eval_step(static: LearnedFunctional, weights: LossWeights, norm: str):
    """``eval_step(params, statistics, batch) -> sums`` (inference mode, no dropout)."""

    def eval_step(params, statistics, batch):
        _, sums = batch_loss(_functional(params, static, statistics), batch, weights,
                             inference=True, norm=norm)
        return sums

    return jax.jit(eval_step)


# ---------------------------------------------------------------------------------------------
# state and its persistence
# ---------------------------------------------------------------------------------------------

class TrainState(NamedTuple):
    """Everything needed to continue a run (``params``/``best_params``: model arrays only)."""

    params: object
    opt_state: object
    best_params: object
    step: int
    epoch: int          # completed epochs
    best_val: float
    best_epoch: int
    bad_epochs: int
    history: list
    finished: bool


def _state_manifest(out) -> Path:
    """``OUT.train.json``: the manifest of the training state."""
    weights, _ = checkpoint_paths(out)
    stem = weights.with_suffix("")
    return stem.with_name(stem.name + ".train.json")


def _blob_name(stem_name: str, digest: str) -> str:
    return f"{stem_name}.train.{digest[:16]}.eqx"


def state_paths(out) -> tuple[Path, Path]:
    """``(blob, manifest)`` of the training state of ``out``.

    The manifest is ``OUT.train.json``; the blob is the file it names
    (``OUT.train.<sha256[:16]>.eqx``), or ``OUT.train.eqx`` (format version 1, or no readable
    manifest).
    """
    manifest = _state_manifest(out)
    legacy = manifest.with_name(manifest.name[:-len(".json")] + ".eqx")
    try:
        name = json.loads(manifest.read_text()).get("blob_file")
    except (OSError, ValueError, AttributeError):
        name = None
    if isinstance(name, str) and name and Path(name).name == name:
        return manifest.with_name(name), manifest
    return legacy, manifest


def _remove_stale_blobs(manifest: Path, keep: Path) -> None:
    """Delete the state blobs of this stem other than ``keep`` (older epochs, interrupted saves,
    the version-1 ``OUT.train.eqx``)."""
    stem_name = manifest.name[:-len(".train.json")]
    pattern = re.compile(re.escape(stem_name) + r"\.train(\.[0-9a-f]{16})?\.eqx")
    for path in manifest.parent.iterdir():
        if path.name != keep.name and pattern.fullmatch(path.name):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _run_identity(functional: LearnedFunctional, config: TrainConfig, fingerprint: str,
                  n_train: int, n_devices: int) -> dict:
    """What must match for a saved state to be resumed.

    ``initial_weights_sha256`` (SHA-256 of the initial network's array bytes) tells a fresh start
    from a fine-tuning one (``mofdft train --init-from``) and one fine-tuned checkpoint from
    another; states saved before it existed resume without the check.
    """
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(eqx.filter(functional.model, eqx.is_array)):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return {"model_config": functional.config.to_dict(), "train_config": config.to_dict(),
            "initial_weights_sha256": digest.hexdigest(),
            "target": functional.target, "use_local_frames": functional.use_local_frames,
            "use_reparam": functional.use_reparam, "data_fingerprint": fingerprint,
            "n_train_steps": int(n_train), "batch_size": _padded_batch(config.batch_size,
                                                                         n_devices)}


def save_train_state(out, state: TrainState, identity: dict) -> None:
    """Write the training state of ``out`` as one atomic unit.

    Sequence: (1) the arrays (current weights, optimiser state, best weights) are written
    atomically to ``OUT.train.<sha256[:16]>.eqx``, a name no complete earlier state uses unless
    its content is the same; (2) the manifest ``OUT.train.json`` (scalars, history, the blob's name
    and SHA-256) atomically replaces the old manifest; (3) blobs the new manifest does not name
    are deleted. Until (2) the old manifest and its blob are untouched; after (2) the new pair is
    complete; (3) only removes files no manifest names. So an interrupt at any point leaves a
    state :func:`load_train_state` resumes (the old one or the new one).
    """
    manifest = _state_manifest(out)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, (state.params, state.opt_state, state.best_params))
    blob = buf.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    blob_path = manifest.with_name(_blob_name(manifest.name[:-len(".train.json")], digest))
    meta = {"format": TRAIN_STATE_FORMAT, "format_version": TRAIN_STATE_VERSION,
            "identity": identity, "step": state.step, "epoch": state.epoch,
            "best_val": state.best_val, "best_epoch": state.best_epoch,
            "bad_epochs": state.bad_epochs, "finished": state.finished,
            "history": state.history, "blob_file": blob_path.name, "blob_sha256": digest}
    text = json.dumps(meta, indent=1) + "\n"
    write_bytes_atomic(blob_path, blob)
    write_bytes_atomic(manifest, text.encode())
    _remove_stale_blobs(manifest, keep=blob_path)


_IDENTITY_ADDED_LATER = frozenset({"initial_weights_sha256"})


def _identity_diff(saved: dict, wanted: dict) -> list[str]:
    diffs = []
    for key in wanted:
        a, b = saved.get(key), wanted[key]
        if a == b or (key in _IDENTITY_ADDED_LATER and key not in saved):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{k}: {a.get(k)!r} (saved) vs {b.get(k)!r} (now)"
                      for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            diffs.append(f"{key}: {a!r} (saved) vs {b!r} (now)")
    return diffs


def load_train_state(out, template: TrainState, identity: dict) -> Optional[TrainState]:
    """The saved state of ``out`` (``None`` if there is none); refuses a mismatched run."""
    json_path = _state_manifest(out)
    if not json_path.exists():
        return None
    try:
        meta = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise TrainStateError(f"{json_path}: not valid JSON ({exc})") from None
    if meta.get("format") != TRAIN_STATE_FORMAT or \
            meta.get("format_version") not in _READABLE_STATE_VERSIONS:
        raise TrainStateError(f"{json_path}: not a mofdft_jax training state of version "
                              + " or ".join(map(str, _READABLE_STATE_VERSIONS)))
    diffs = _identity_diff(meta.get("identity", {}), identity)
    if diffs:
        raise TrainStateError(f"{json_path}: cannot resume, the saved run differs: "
                              + "; ".join(diffs)
                              + " (use another --out, or delete the .train.* files to restart)")
    eqx_path, _ = state_paths(out)
    if meta["format_version"] >= 2 and eqx_path.name != meta.get("blob_file"):
        raise TrainStateError(f"{json_path}: names no valid blob file "
                              f"({meta.get('blob_file')!r})")
    if not eqx_path.exists():
        raise TrainStateError(f"{eqx_path}: training-state weights not found "
                              f"(named by {json_path})")
    blob = eqx_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["blob_sha256"]:
        raise TrainStateError(f"{eqx_path}: SHA-256 differs from the one in {json_path} "
                              "(the file was modified or corrupted)")
    like = (template.params, template.opt_state, template.best_params)
    params, opt_state, best = eqx.tree_deserialise_leaves(io.BytesIO(blob), like)
    return TrainState(params=params, opt_state=opt_state, best_params=best, step=int(meta["step"]),
                      epoch=int(meta["epoch"]), best_val=float(meta["best_val"]),
                      best_epoch=int(meta["best_epoch"]), bad_epochs=int(meta["bad_epochs"]),
                      history=list(meta["history"]), finished=bool(meta["finished"]))


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
      functional: the best functional (lowest validation loss; training loss without validation).
      history: one dict per epoch (losses, validation metrics, learning rate, wall time).
      best_epoch: 1-based epoch of the best model; epochs: completed epochs.
      steps: optimiser steps taken; stopped_early: whether patience ended the run.
      resumed_from_epoch: epoch the run resumed from (0 for a fresh run).
      wall_s: wall time of this call.
    """

    functional: LearnedFunctional
    history: list
    best_epoch: int
    epochs: int
    steps: int
    stopped_early: bool
    resumed_from_epoch: int
    wall_s: float


def _padded_batch(batch_size: int, n_devices: int) -> int:
    return int(math.ceil(batch_size / n_devices) * n_devices)


def _sums_to_metrics(sums: dict, prefix: str) -> dict:
    """Per-row means of the batch sums of :func:`~mofdft_jax.train.losses.batch_loss`: the label
    terms over the labelled rows, Δp and the loss over all rows, the bound violations (kcal/mol)
    over the visited rows (absent without them)."""
    n = max(float(sums["n"]), 1.0)
    n_label = max(float(sums.get("n_labelled", sums["n"])), 1.0)
    metrics = {f"{prefix}loss": float(sums["loss"]) / n,
               f"{prefix}energy_mae_kcal": float(sums["energy_abs"]) / n_label,
               f"{prefix}energy_rmse_kcal": math.sqrt(float(sums["energy_sq"]) / n_label),
               f"{prefix}grad_loss": float(sums["grad"]) / n_label,
               f"{prefix}delta_loss": float(sums["delta"]) / n,
               f"{prefix}hvp_loss": float(sums.get("hvp", 0.0)) / n_label,
               f"{prefix}curv_loss": float(sums.get("curv", 0.0)) / n_label}
    n_bounded = float(sums.get("n_bounded", 0.0))
    if n_bounded > 0:
        metrics[f"{prefix}n_visited"] = int(round(n_bounded))
        for kind in ("var", "desc", "conv"):
            metrics[f"{prefix}bound_{kind}_kcal"] = float(sums[f"bound_{kind}"]) / n_bounded
    return metrics


def _split_functional(functional: LearnedFunctional):
    """``(params, static)``: the model's float arrays, and the functional without them."""
    params, static_model = eqx.partition(functional.model, eqx.is_inexact_array)
    static = dataclasses.replace(functional, model=static_model, statistics=None)
    return params, static


def _batch_sums(eval_step, params, statistics, data: TrainingSet, batch_size: int,
                sharding=None) -> dict:
    """Loss sums of ``eval_step`` over every step of ``data`` (padded batches)."""
    totals = None
    for start in range(0, data.n_steps, batch_size):
        idx = np.arange(start, min(start + batch_size, data.n_steps))
        batch = gather_batch(data, idx, batch_size)
        if sharding is not None:
            batch = jax.device_put(batch, sharding)
        sums = jax.device_get(eval_step(params, statistics, batch))
        totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
    return totals


def evaluate(functional: LearnedFunctional, data: TrainingSet, *, weights: LossWeights,
             batch_size: int = 32, norm: str = "l2") -> dict:
    """Mean loss terms and energy MAE/RMSE (kcal/mol) of ``functional`` on every step of ``data``.

    Keys: ``loss``, ``energy_mae_kcal``, ``energy_rmse_kcal``, ``grad_loss``, ``delta_loss``.
    """
    ensure_x64()
    params, static = _split_functional(functional)
    eval_step = _cached("eval", (static, weights, norm),
                        lambda: make_eval_step(static, weights, norm))
    return _sums_to_metrics(_batch_sums(eval_step, params, functional.statistics, data,
                                        batch_size), "")


def train(functional: LearnedFunctional, train_set: TrainingSet, val_set: TrainingSet | None,
          config: TrainConfig, *, out=None, data_fingerprint: str = "",
          on_epoch: Callable[[dict], None] | None = None,
          on_step: Callable[[int, int, float], None] | None = None,
          extra_metadata: dict | None = None, devices=None) -> TrainResult:
    """Train ``functional.model`` (see module docstring).

    Args:
      functional: the initial functional (its statistics are kept fixed).
      train_set, val_set: prepared splits (same ``(natm_max, naux_max)`` padding is advised).
      config: :class:`TrainConfig`.
      out: checkpoint stem; enables atomic checkpoints and resuming.
      data_fingerprint: stored in the checkpoint and checked on resume.
      on_epoch: called with the epoch's metrics dict after each epoch.
      on_step: called as ``on_step(step, batch_in_epoch, loss)`` after each optimiser step.
      extra_metadata: merged into the checkpoint's ``extra``.
      devices: devices of the data-parallel mesh (default ``jax.local_devices()``).
    """
    ensure_x64()
    t0 = time.perf_counter()
    if train_set.n_steps == 0:
        raise ValueError("the training set has no labelled steps")
    devices = list(jax.local_devices() if devices is None else devices)
    mesh = Mesh(np.array(devices), ("batch",))
    batch_sharding = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_size = _padded_batch(config.batch_size, len(devices))
    n_batches = int(math.ceil(train_set.n_steps / batch_size))
    total_steps = n_batches * config.epochs
    optimizer = make_optimizer(config)

    params, static = _split_functional(functional)
    statistics = jax.device_put(functional.statistics, replicated)
    identity = _run_identity(functional, config, data_fingerprint, train_set.n_steps, len(devices))
    fresh = TrainState(params=params, opt_state=optimizer.init(params), best_params=params,
                       step=0, epoch=0, best_val=math.inf, best_epoch=0, bad_epochs=0,
                       history=[], finished=False)
    state = load_train_state(out, fresh, identity) if out is not None else None
    resumed_from = 0 if state is None else state.epoch
    state = fresh if state is None else state

    run_key = (static, config.b1, config.b2, config.eps, config.clip_norm, config.weights,
               config.norm)
    train_step = _cached("train", run_key,
                         lambda: make_train_step(static, optimizer, config.weights, config.norm))
    eval_step = _cached("eval", (static, config.weights, config.norm),
                        lambda: make_eval_step(static, config.weights, config.norm))
    params = jax.device_put(state.params, replicated)
    opt_state = jax.device_put(state.opt_state, replicated)
    best_params = state.best_params
    step, history = state.step, list(state.history)
    best_val, best_epoch, bad_epochs = state.best_val, state.best_epoch, state.bad_epochs
    base_key = jax.random.PRNGKey(config.seed)
    stopped_early = state.finished and bad_epochs >= config.patience

    def checkpoint_extra(epoch_metrics: dict) -> dict:
        extra = {"train_config": config.to_dict(), "best_epoch": best_epoch,
                 "epochs_completed": epoch_metrics.get("epoch", 0), "metrics": epoch_metrics,
                 "n_train_steps": train_set.n_steps,
                 "n_val_steps": 0 if val_set is None else val_set.n_steps,
                 "n_devices": len(devices)}
        extra.update(extra_metadata or {})
        return extra

    epoch = state.epoch
    while not state.finished and epoch < config.epochs:
        t_epoch, cpu_epoch = time.perf_counter(), time.process_time()
        train_totals = None
        for b, idx in enumerate(epoch_batches(train_set.n_steps, batch_size, config.seed, epoch)):
            batch = jax.device_put(gather_batch(train_set, idx, batch_size), batch_sharding)
            key = jax.random.fold_in(base_key, step)
            lr = learning_rate(config, total_steps, step)
            params, opt_state, sums = train_step(params, opt_state, statistics, batch, key,
                                                 jnp.asarray(lr, dtype=jnp.float64))
            step += 1
            sums = jax.device_get(sums)
            train_totals = sums if train_totals is None else \
                {k: train_totals[k] + sums[k] for k in train_totals}
            if on_step is not None:
                on_step(step, b, float(sums["loss"]) / max(float(sums["n"]), 1.0))
        epoch += 1
        metrics = {"epoch": epoch, "step": step, "lr": lr}
        metrics.update(_sums_to_metrics(train_totals, "train_"))
        if val_set is not None and val_set.n_steps:
            metrics.update(_sums_to_metrics(
                _batch_sums(eval_step, params, statistics, val_set, batch_size, batch_sharding),
                "val_"))
            monitored = metrics["val_loss"]
        else:
            monitored = metrics["train_loss"]
        improved = monitored < best_val
        if improved:
            best_val, best_epoch, bad_epochs = monitored, epoch, 0
            best_params = jax.device_get(params)
        else:
            bad_epochs += 1
        metrics.update({"best_epoch": best_epoch, "best_val": best_val, "improved": improved,
                        "epoch_wall_s": time.perf_counter() - t_epoch,
                        "epoch_cpu_s": time.process_time() - cpu_epoch})
        history.append(metrics)
        stopped_early = bad_epochs >= config.patience
        finished = stopped_early or epoch >= config.epochs
        if out is not None:
            if improved:
                save_checkpoint(out, _functional(best_params, static, functional.statistics),
                                data_fingerprint=data_fingerprint,
                                extra=checkpoint_extra(metrics))
            save_train_state(out, TrainState(
                params=jax.device_get(params), opt_state=jax.device_get(opt_state),
                best_params=best_params, step=step, epoch=epoch, best_val=best_val,
                best_epoch=best_epoch, bad_epochs=bad_epochs, history=history,
                finished=finished), identity)
        if on_epoch is not None:
            on_epoch(metrics)
        if stopped_early:
            break

    best = _functional(jax.device_get(best_params), static, functional.statistics)
    if out is not None and not checkpoint_paths(out)[1].exists():
        save_checkpoint(out, best, data_fingerprint=data_fingerprint,
                        extra=checkpoint_extra(history[-1] if history else {}))
    return TrainResult(functional=best, history=history, best_epoch=best_epoch, epochs=epoch,
                       steps=step, stopped_early=stopped_early, resumed_from_epoch=resumed_from,
                       wall_s=time.perf_counter() - t0)

