"""``mofdft train``: fit a learned functional to a labelled dataset (spec §3.3).

Reads the dataset written by ``mofdft datagen``, splits it (the recipe's seeded split), computes the
adapter statistics on the training split, and trains a Graphormer-3D functional with
:func:`mofdft_jax.train.loop.train`. ``OUT.eqx``/``OUT.json`` is the best model so far (atomic);
``OUT.train.*`` the resumable state: rerunning the same command after an interruption continues
from the last completed epoch and ends with the same weights. ``--eval-test N`` then runs OFDFT
from ProjMINAO on N held-out test molecules (spec §5.1) and stores the errors in the checkpoint's
metadata.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mofdft_jax.commands.output import echo_json

#: Solver step size per dataset family for learned functionals (spec §4.4: 5e-4 for ethanol).
SOLVER_LR = {"ethanol": 5e-4}


def dataset_family(recipe_name: str) -> str | None:
    """``ethanol``, ``qm9``, ``qmugs`` or ``chignolin`` from a recipe name (``None`` if unknown)."""
    name = (recipe_name or "").lower()
    for family in ("ethanol", "qm9", "qmugs", "chignolin"):
        if family in name:
            return family
    return None


def _parse_weights(text):
    """``"E,G,D"`` up to ``"E,G,D,H,C,B"`` (or a sequence of 3–6 numbers) → :class:`LossWeights`
    (H, C: the vector and scalar curvature terms; B: the visited-density bounds; 0 unless
    given)."""
    from mofdft_jax.molecules import InputError
    from mofdft_jax.train.losses import LossWeights

    try:
        parts = text.split(",") if isinstance(text, str) else list(text)
        values = [float(x) for x in parts]
    except (TypeError, ValueError):
        values = []
    if len(values) not in (3, 4, 5, 6) or any(v < 0 for v in values):
        raise InputError(f"--loss-weights {text!r}: expected 3 to 6 non-negative numbers "
                         "ENERGY,GRAD,DELTA[,CURVATURE[,QUADRATIC[,BOUND]]] (e.g. 1,0.1,0.08)")
    return LossWeights(*values)


def train_command(
    data: str = typer.Option(..., "--data", help="Dataset directory written by mofdft datagen."),
    config: str = typer.Option("small", "--config", help="Model config: small, paper, "
                               "paper_ethanol or tiny."),
    target: str = typer.Option("ts_res", "--target", help="Learned energy: ts_res (T_S - T_APBE), "
                               "txc (T_S + E_xc) or tot (KS total energy)."),
    out: str = typer.Option(..., "--out", help="Checkpoint stem: writes OUT.eqx + OUT.json (best "
                            "model) and OUT.train.json + OUT.train.<hash>.eqx (resumable "
                            "state, saved atomically after every epoch)."),
    epochs: int = typer.Option(None, "--epochs", min=0, help="Maximum epochs (small: 200, paper: "
                               "600)."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Labelled steps per batch "
                                   "(small: 32; paper: 256 for ethanol)."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Peak learning rate (small: 5e-4, "
                             "paper: 1e-4)."),
    warmup: int = typer.Option(None, "--warmup", min=0, help="Warm-up steps (default: 5% of the "
                               "run for small, 30000 for paper)."),
    patience: int = typer.Option(None, "--patience", min=1, help="Early-stopping patience in "
                                 "epochs (paper: 20)."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, shuffling and dropout."),
    loss_weights: str = typer.Option(None, "--loss-weights", help="ENERGY,GRAD,DELTA[,CURVATURE"
                                     "[,QUADRATIC[,BOUND]]] loss weights (default: the paper's "
                                     "Table S4 row for the dataset and target, else 1,0.1,0.08; "
                                     "the curvature terms need labels made with "
                                     "response_directions > 0; BOUND weighs the visited-density "
                                     "bounds, default 1 with --visited)."),
    visited: list[str] = typer.Option(None, "--visited", help="Directory written by mofdft "
                                      "sample-visited (repeatable: sampling rounds accumulate); "
                                      "its densities train the variational, descent and "
                                      "convexity bounds."),
    norm: str = typer.Option("l2", "--norm", help="Norm of the gradient and Δp losses: l2 "
                             "(Euclidean) or l1 (sum of absolute values)."),
    dropout: float = typer.Option(None, "--dropout", min=0.0, max=1.0, help="Override the "
                                  "config's dropout rates (residual, attention, output)."),
    no_grad_labels: bool = typer.Option(False, "--no-grad-labels", help="Ablation: no gradient "
                                        "loss (ξ_grad = 0)."),
    ground_state_only: bool = typer.Option(False, "--ground-state-only", help="Ablation: train on "
                                           "the converged SCF step of each molecule only."),
    no_local_frames: bool = typer.Option(False, "--no-local-frames", help="Ablation: no local "
                                         "frames."),
    no_reparam: bool = typer.Option(False, "--no-reparam", help="Ablation: no natural "
                                    "reparametrisation."),
    parity: bool = typer.Option(False, "--parity", help="Parity-symmetric energy: the average "
                                "over the density and its mirror image (same energy for mirror "
                                "images; twice the network cost)."),
    filter_kcal: float = typer.Option(None, "--filter-kcal", help="Drop SCF steps more than this "
                                      "many kcal/mol above the ground state (chignolin: 500)."),
    eval_test: int = typer.Option(0, "--eval-test", min=0, help="After training, run OFDFT from "
                                  "ProjMINAO on this many test-split molecules and store the "
                                  "energy / HF-force errors in the checkpoint metadata."),
    eval_steps: int = typer.Option(1000, "--eval-steps", min=0, help="Solver steps of the "
                                   "evaluation (paper: 1000)."),
    init_from: str = typer.Option(None, "--init-from", help="Fine-tune: start from this "
                                  "checkpoint's weights and adapter statistics instead of a fresh "
                                  "network (same --config, --target, --dropout and adapter "
                                  "flags; --seed still sets shuffling and dropout)."),
    allow_unseen_elements: bool = typer.Option(False, "--allow-unseen-elements", help="Train "
                                               "even when the validation split (or the "
                                               "--eval-test molecules) holds elements the "
                                               "training split lacks; refused otherwise, since "
                                               "the model's energies there are arbitrary."),
    train_size: int = typer.Option(None, "--train-size", min=1, help="Train on the first N "
                                   "molecules of the train split only (sorted shard names, so "
                                   "smaller sizes are subsets of larger ones: a learning curve)."),
    val_size: int = typer.Option(None, "--val-size", min=1, help="Validate on the first N "
                                 "molecules of the val split only."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
):
    """Train a learned functional on DATA and write the checkpoint OUT (resumable)."""
    from rich.console import Console

    from mofdft_jax.model.functional import TARGETS
    from mofdft_jax.model.graphormer import CONFIGS
    from mofdft_jax.train.losses import NORMS

    for name, value, allowed in (("--config", config, list(CONFIGS)),
                                 ("--target", target, list(TARGETS)), ("--norm", norm, NORMS)):
        if value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}",
                                     param_hint=f"'{name}'")
    console = Console(stderr=True)
    summary = run_train(data, config=config, target=target, out=out, epochs=epochs,
                        batch_size=batch_size, lr=lr, warmup=warmup, patience=patience, seed=seed,
                        loss_weights=loss_weights, norm=norm, dropout=dropout,
                        no_grad_labels=no_grad_labels, ground_state_only=ground_state_only,
                        no_local_frames=no_local_frames, no_reparam=no_reparam,
                        parity=parity, filter_kcal=filter_kcal, eval_test=eval_test,
                        eval_steps=eval_steps, visited=visited or (), init_from=init_from,
                        allow_unseen_elements=allow_unseen_elements, train_size=train_size,
                        val_size=val_size, console=console)
    if json_output:
        echo_json("train", json_summary(summary))
    else:
        _print_summary(summary, console)


def run_train(data: str, *, config: str = "small", target: str = "ts_res", out: str,
              epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
              warmup: int | None = None, patience: int | None = None, seed: int = 0,
              loss_weights: str | None = None, norm: str = "l2", dropout: float | None = None,
              no_grad_labels: bool = False, ground_state_only: bool = False,
              no_local_frames: bool = False, no_reparam: bool = False, parity: bool = False,
              filter_kcal: float | None = None, eval_test: int = 0, eval_steps: int = 1000,
              visited=(), init_from: str | None = None, allow_unseen_elements: bool = False,
              train_size: int | None = None, val_size: int | None = None,
              console=None, on_epoch=None) -> dict:
    """Everything ``mofdft train`` does; returns the JSON summary.

    ``init_from`` (fine-tuning, the adaptive-sampling rounds of docs/landscape.md §6): the network
    weights and adapter statistics of that checkpoint replace the fresh initialisation; its
    config, target and adapter flags must equal this run's (:class:`CheckpointError` otherwise).

    Unless ``allow_unseen_elements``, a validation split (or, with ``eval_test``, a set of test
    molecules) holding elements the training split lacks is an :class:`InputError` raised before
    the labels are prepared (:func:`mofdft_jax.data.splits.check_split_elements`).
    """
    import dataclasses

    import jax
    import numpy as np
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from mofdft_jax.config import ensure_x64
    from mofdft_jax.data.loader import open_dataset
    from mofdft_jax.data.splits import check_split_elements, make_splits
    from mofdft_jax.data.training_set import prepare_training_data
    from mofdft_jax.model.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
    from mofdft_jax.model.functional import make_learned_functional
    from mofdft_jax.model.graphormer import count_parameters, make_config
    from mofdft_jax.molecules import InputError
    from mofdft_jax.train.data import make_training_set
    from mofdft_jax.train.losses import LossWeights, paper_loss_weights
    from mofdft_jax.train.loop import TRAIN_PRESETS, TrainStateError, train

    ensure_x64()
    t0 = time.perf_counter()
    console = console or Console(stderr=True)
    dataset = open_dataset(data)
    recipe_name = dataset.manifest.get("recipe", {}).get("name", "")
    family = dataset_family(recipe_name)

    preset = TRAIN_PRESETS["paper" if config.startswith("paper") else "small"]
    if loss_weights is not None:
        weights = _parse_weights(loss_weights)
    else:
        try:
            weights = paper_loss_weights(family or "", target)
        except ValueError:
            weights = LossWeights()
    if no_grad_labels:
        weights = dataclasses.replace(weights, grad=0.0)
    explicit_bound = loss_weights is not None and len(str(loss_weights).split(",")) == 6
    if visited and not explicit_bound:
        weights = dataclasses.replace(weights, bound=1.0)
    changes = {"seed": seed, "weights": weights, "norm": norm}
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("peak_lr", lr),
                       ("warmup_steps", warmup), ("patience", patience)):
        if value is not None:
            changes[key] = value
    if config.startswith("paper") and family is not None and family != "ethanol" \
            and batch_size is None:
        changes["batch_size"] = 128  # spec §3.3: 256 for ethanol, 128 for the others
    train_config = preset.replace(**changes)
    overrides = {}
    if dropout is not None:
        overrides = {"dropout": dropout, "attention_dropout": dropout, "output_dropout": dropout}
    model_config = make_config(config, **overrides)

    base = init_info = None
    if init_from is not None:  # checked before the labels are prepared
        from mofdft_jax.model.checkpoint import CheckpointError

        base, init_info = load_checkpoint(init_from, model_config, target=target)
        flags = {"use_local_frames": not no_local_frames, "use_reparam": not no_reparam,
                 "parity_symmetric": parity}
        differ = [f"{f}={getattr(base, f)} (checkpoint) vs {v} (requested)"
                  for f, v in flags.items() if getattr(base, f) != v]
        if differ:
            raise CheckpointError(f"--init-from {init_from}: adapter flags differ: "
                                  + "; ".join(differ))

    console.print(f"[bold]mofdft train[/] {data} ({recipe_name or 'dataset'}, "
                  f"{len(dataset)} molecules) → {out}", highlight=False)
    splits = make_splits(dataset)
    for name, size in (("train", train_size), ("val", val_size)):
        if size is not None:
            if size > len(splits.get(name, [])):
                raise InputError(f"--{name}-size {size}: the {name} split of {data} has only "
                                 f"{len(splits.get(name, []))} molecules")
            splits[name] = splits[name][:size]  # sorted shard names: nested subsets
    if not allow_unseen_elements:  # before the labels are prepared
        check_split_elements(dataset, {**splits, "test": splits.get("test", [])[:eval_test]},
                             held_out=("val", "test") if eval_test else ("val",),
                             override="--allow-unseen-elements")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("preparing labels (adapter geometries)", total=None)
        prepared = prepare_training_data(
            data, target=target, split_names=("train", "val"), splits=splits,
            ground_state_only=ground_state_only, filter_above_ground_kcal=filter_kcal,
            use_local_frames=not no_local_frames, use_reparam=not no_reparam,
            visited=tuple(visited),
            progress=lambda done, total: progress.update(task, completed=done, total=total))
    molecules = prepared.splits["train"] + prepared.splits["val"]
    shape = (max(len(m.atom_numbers) for m in molecules), max(len(m.aux_atom) for m in molecules))
    train_set = make_training_set(prepared.splits["train"], *shape)
    val_set = (make_training_set(prepared.splits["val"], *shape)
               if prepared.splits["val"] else None)
    functional = make_learned_functional(model_config, prepared.statistics, target,
                                         key=jax.random.PRNGKey(seed),
                                         use_local_frames=not no_local_frames,
                                         use_reparam=not no_reparam, parity_symmetric=parity)
    if base is not None:
        functional = dataclasses.replace(functional, model=base.model,
                                         statistics=base.statistics)
    n_params = count_parameters(functional.model)
    n_visited = int(train_set.n_steps - np.sum(train_set.label_weight))
    console.print(f"  {train_set.n_molecules} train / "
                  f"{0 if val_set is None else val_set.n_molecules} val molecules, "
                  f"{train_set.n_steps} / {0 if val_set is None else val_set.n_steps} labelled "
                  f"steps; model {config} ({n_params:,} parameters); target {target}; "
                  f"loss weights {weights.energy:g}/{weights.grad:g}/{weights.delta:g}"
                  + (f"/{weights.hvp:g}/{weights.curv:g} (curvature)"
                     if weights.hvp or weights.curv else "")
                  + (f"/{weights.bound:g} (bounds at {n_visited} visited densities)"
                     if visited else "") + "; "
                  + ("parity-symmetric; " if parity else "") +
                  f"{len(jax.local_devices())} device(s)", highlight=False)

    settings = prepared.label_settings
    extra = {
        "name": recipe_name or "learned",
        "dataset": str(data),
        "dataset_family": family,
        "label_settings": settings,
        "solver_defaults": {"basis": settings.get("basis"),
                            "grid_level": settings.get("grid_level"),
                            "xc": str(settings.get("xc", "pbe")).lower(),
                            "lr": SOLVER_LR.get(family, 1e-3)},
        "ablations": {"no_grad_labels": no_grad_labels, "ground_state_only": ground_state_only,
                      "no_local_frames": no_local_frames, "no_reparam": no_reparam},
        "parity_symmetric": parity,
        "visited": [str(v) for v in visited],
        "init_from": (None if init_from is None else
                      {"checkpoint": str(init_from),
                       "data_fingerprint": init_info.data_fingerprint}),
        "model_config_name": config,
        "n_parameters": n_params,
        "splits": {name: len(files) for name, files in splits.items()},
    }
    batches = -(-train_set.n_steps // train_config.batch_size)
    history = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task("epoch 1 (compiling)", total=batches, info="")

        def step_cb(step, batch, loss):
            progress.update(task, completed=batch + 1, info=f"loss {loss:.4g}")

        def epoch_cb(metrics):
            history.append(metrics)
            val = (f"val loss {metrics['val_loss']:.4g}, val E MAE "
                   f"{metrics['val_energy_mae_kcal']:.3f} kcal/mol, "
                   if "val_loss" in metrics else "")
            progress.console.print(
                f"  epoch {metrics['epoch']:4d}  train loss {metrics['train_loss']:.4g} "
                f"(E MAE {metrics['train_energy_mae_kcal']:.3f} kcal/mol, grad "
                f"{metrics['train_grad_loss']:.3g}, Δp {metrics['train_delta_loss']:.3g}"
                + (f", curvature {metrics['train_hvp_loss']:.3g} / "
                   f"{metrics['train_curv_loss']:.3g} kcal/mol"
                   if metrics.get("train_hvp_loss") or metrics.get("train_curv_loss") else "")
                + (f", bounds {metrics['train_bound_var_kcal']:.3g}/"
                   f"{metrics['train_bound_desc_kcal']:.3g}/"
                   f"{metrics['train_bound_conv_kcal']:.3g} kcal/mol"
                   if "train_bound_var_kcal" in metrics else "")
                + f")  {val}"
                f"lr {metrics['lr']:.2e}  {metrics['epoch_wall_s']:.1f} s"
                + ("  *" if metrics["improved"] else ""), highlight=False)
            progress.update(task, completed=0, description=f"epoch {metrics['epoch'] + 1}")
            if on_epoch is not None:
                on_epoch(metrics)

        try:
            result = train(functional, train_set, val_set, train_config, out=out,
                           data_fingerprint=prepared.fingerprint, on_epoch=epoch_cb,
                           on_step=step_cb, extra_metadata=extra)
        except TrainStateError as exc:
            raise InputError(str(exc)) from None
    if result.resumed_from_epoch:
        console.print(f"  resumed from epoch {result.resumed_from_epoch}", highlight=False)

    best_metrics = next((m for m in result.history if m["epoch"] == result.best_epoch), {})
    summary = {
        "checkpoint": str(checkpoint_paths(out)[1]),
        "weights": str(checkpoint_paths(out)[0]),
        "data": str(data),
        "data_fingerprint": prepared.fingerprint,
        "config": config,
        "n_parameters": n_params,
        "target": target,
        "train_config": train_config.to_dict(),
        "ablations": extra["ablations"],
        "n_train_molecules": train_set.n_molecules,
        "n_val_molecules": 0 if val_set is None else val_set.n_molecules,
        "n_train_steps": train_set.n_steps,
        "n_train_visited": n_visited,
        "n_val_steps": 0 if val_set is None else val_set.n_steps,
        "epochs": result.epochs,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "best": best_metrics,
        "history": result.history,
        "train_wall_s": result.wall_s,
    }
    if eval_test:
        from mofdft_jax.commands.learned_solve import evaluate_on_dataset

        files = splits.get("test", [])[:eval_test]
        if not files:
            raise InputError(f"{data}: --eval-test needs a non-empty test split")
        functional_best, info = load_checkpoint(out)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                      transient=True) as progress:
            task = progress.add_task("OFDFT on test molecules", total=len(files), info="")
            done = []

            def mol_cb(row):
                done.append(row)
                progress.update(task, completed=len(done),
                                info=f"{row['molecule']}: ΔE {row['energy_error_kcal']:+.2f} "
                                     f"kcal/mol, ΔF {row['force_mae_kcal_per_angstrom']:.2f}")

            evaluation = evaluate_on_dataset(functional_best, info, data, files,
                                             steps=eval_steps, on_molecule=mol_cb)
        summary["test_evaluation"] = evaluation
        meta_extra = dict(info.extra)
        meta_extra["test_evaluation"] = {k: v for k, v in evaluation.items() if k != "molecules"}
        meta_extra["test_evaluation"]["molecules"] = [
            {k: r[k] for k in ("molecule", "energy_error_kcal", "force_mae_kcal_per_angstrom",
                               "chosen_step")} for r in evaluation["molecules"]]
        save_checkpoint(out, functional_best, data_fingerprint=info.data_fingerprint,
                        extra=meta_extra)
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def json_summary(summary: dict) -> dict:
    """The ``mofdft train --json`` object: the run's summary without its per-epoch ``history``
    (one row per epoch; it stays in the train state ``OUT.train.json``, key ``history``), with
    that file's path and its number of rows."""
    out = {k: v for k, v in summary.items() if k != "history"}
    out["history_file"] = str(Path(summary["checkpoint"]).with_suffix(".train.json"))
    out["n_history_rows"] = len(summary.get("history", ()))
    return out


def _print_summary(summary: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"mofdft train → {summary['checkpoint']}", show_header=False)
    table.add_row("model", f"{summary['config']} ({summary['n_parameters']:,} parameters), "
                           f"target {summary['target']}")
    table.add_row("data", f"{summary['n_train_molecules']} train / {summary['n_val_molecules']} "
                          f"val molecules ({summary['n_train_steps']} / {summary['n_val_steps']} "
                          "labelled steps)")
    table.add_row("epochs", f"{summary['epochs']} ({summary['steps']} steps), best "
                            f"{summary['best_epoch']}"
                            + (", stopped early" if summary["stopped_early"] else ""))
    best = summary["best"]
    if "val_energy_mae_kcal" in best:
        table.add_row("best val energy MAE", f"{best['val_energy_mae_kcal']:.3f} kcal/mol")
    if "train_energy_mae_kcal" in best:
        table.add_row("train energy MAE", f"{best['train_energy_mae_kcal']:.3f} kcal/mol")
    ev = summary.get("test_evaluation")
    if ev:
        table.add_row("test OFDFT energy MAE", f"{ev['energy_mae_kcal']:.3f} kcal/mol "
                                               f"({ev['n']} molecules, {ev['init']})")
        table.add_row("test HF force MAE", f"{ev['force_mae_kcal_per_angstrom']:.3f} "
                                           "kcal/mol/Å")
    table.add_row("wall time", f"{summary['wall_s']:.1f} s")
    console.print(table)
