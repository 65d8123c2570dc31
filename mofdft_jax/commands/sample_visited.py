"""``mofdft sample-visited``: the densities a learned functional's minimisation visits, as training
rows with label-free bounds (issue 19; :mod:`mofdft_jax.workflows.visited`).

For every labelled molecule of the chosen splits of a dataset: the molecule is prepared with the
dataset's label settings (:func:`mofdft_jax.commands.learned_solve.prepare_learned_molecule`),
minimised from ``--init`` with ``--optimizer`` (the solver of ``mofdft solve``, trajectory kept),
and the kept states (:func:`~mofdft_jax.workflows.visited.select_visited_steps`) are written with
the constants of the variational, descent and convexity bounds
(:mod:`mofdft_jax.data.visited`). Resumable: a rerun with the same checkpoint and options skips
the molecules already written. ``mofdft train --visited OUT`` trains on them.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mofdft_jax.commands.output import echo_json


def sample_visited(
    checkpoint: str = typer.Argument(..., help="Learned-functional checkpoint stem to sample "
                                     "with."),
    data: str = typer.Option(..., "--data", help="Labelled dataset directory (its label "
                             "settings are used)."),
    out: Path = typer.Option(..., "--out", help="Visited directory to write (visited.json + one "
                             ".visited.npz per molecule)."),
    splits: str = typer.Option("train,val", "--splits", help="Comma-separated splits to sample "
                               "(never the test split: it stays unseen)."),
    optimizer: str = typer.Option("precond-lbfgs", "--optimizer", help="Density optimiser (the "
                                  "solver's registry)."),
    init: str = typer.Option("projminao", "--init", help="Initial guess of the minimisations."),
    steps: int = typer.Option(300, "--steps", min=1, help="Maximum solver steps."),
    keep: int = typer.Option(10, "--keep", min=1, help="States kept per minimisation (steps "
                             "0, 1, 2, 4, 8, … and the last)."),
    gtol: float = typer.Option(1e-4, "--gtol", min=0.0, help="Tolerance on |P grad E|."),
    n: int = typer.Option(None, "--n", min=1, help="At most this many molecules per split."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Sample the densities CHECKPOINT's minimisations visit on DATA, with their bounds."""
    from rich.console import Console

    from mofdft_jax.molecules import InputError

    names = [s.strip() for s in splits.split(",") if s.strip()]
    if "test" in names:
        raise InputError("--splits: the test split is the unseen evaluation set; sample train "
                         "and val only")
    console = Console(stderr=True)
    summary = run_sample_visited(checkpoint, data, out, splits=names, optimizer=optimizer,
                                 init=init, steps=steps, keep=keep, gtol=gtol, n=n,
                                 console=console)
    if json_output:
        echo_json("sample-visited", summary)
    else:
        console.print(f"{summary['n_molecules']} molecules ({summary['n_new']} new), "
                      f"{summary['n_samples']} visited states; converged "
                      f"{summary['n_converged']}/{summary['n_molecules']}; mean energy error of "
                      f"the last states {summary['mean_final_energy_error_kcal']:+.2f} kcal/mol "
                      f"→ {out}", highlight=False)


def run_sample_visited(checkpoint, data, out, *, splits=("train", "val"),
                       optimizer: str = "precond-lbfgs", init: str = "projminao",
                       steps: int = 300, keep: int = 10, gtol: float = 1e-4,
                       n: int | None = None, console=None) -> dict:
    """Everything ``mofdft sample-visited`` does; returns the summary (see module docstring)."""
    import numpy as np
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from mofdft_jax.commands.learned_solve import (load_functional, prepare_learned_molecule,
                                                   solve_molecule_learned)
    from mofdft_jax.config import ensure_x64
    from mofdft_jax.data.loader import open_dataset
    from mofdft_jax.data.shards import file_sha256
    from mofdft_jax.data.splits import make_splits
    from mofdft_jax.data.visited import (VISITED_MANIFEST, read_visited_manifest,
                                         write_visited, write_visited_manifest)
    from mofdft_jax.model.checkpoint import checkpoint_paths
    from mofdft_jax.molecules import InputError
    from mofdft_jax.solver import get_optimizer
    from mofdft_jax.workflows.visited import select_visited_steps, visited_samples

    ensure_x64()
    console = console or Console(stderr=True)
    get_optimizer(optimizer)  # unknown names fail here, before any work
    functional, info = load_functional(checkpoint)
    dataset = open_dataset(data)
    all_splits = make_splits(dataset)
    for name in splits:
        if name not in all_splits:
            raise InputError(f"{data}: no split {name!r} (splits: {', '.join(all_splits)})")
    settings = dataset.label_settings
    xc = str(settings.get("xc", "pbe")).lower()
    basis, grid_level = settings["basis"], int(settings["grid_level"])
    identity = {"checkpoint": str(checkpoint),
                "checkpoint_weights_sha256": file_sha256(checkpoint_paths(checkpoint)[0]),
                "checkpoint_data_fingerprint": info.data_fingerprint,
                "target": functional.target, "dataset": str(dataset.directory),
                "label_settings": settings, "optimizer": optimizer, "init": init,
                "steps": int(steps), "keep": int(keep), "gtol": float(gtol)}
    out = Path(out)
    molecules: dict = {}
    if (out / VISITED_MANIFEST).is_file():
        saved = read_visited_manifest(out)
        changed = [k for k in identity if k != "checkpoint" and saved.get(k) != identity[k]]
        if changed:
            raise InputError(f"{out}: sampled with different {', '.join(changed)}; write a new "
                             "round to a new directory")
        molecules = dict(saved.get("molecules", {}))
    out.mkdir(parents=True, exist_ok=True)
    files = [(name, f) for name in splits for f in all_splits[name][:n]]
    todo = [(name, f) for name, f in files if f not in molecules]
    t0 = time.perf_counter()
    console.print(f"[bold]mofdft sample-visited[/] {checkpoint} on {data}: {len(files)} molecules "
                  f"({len(files) - len(todo)} done), {optimizer} from {init}, ≤ {steps} steps, "
                  f"{keep} states kept; {basis} / grid level {grid_level} / {xc.upper()} from the "
                  "dataset's label settings", highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("sampling", total=len(todo))
        for split, file in todo:
            labels = dataset.read(file)
            progress.update(task, description=f"{labels.molecule.name}: {optimizer}")
            setup = prepare_learned_molecule(
                labels.molecule, functional, basis=basis, grid_level=grid_level, xc=xc,
                init=init, with_forces=False, with_metric=get_optimizer(optimizer).uses_metric)
            summary, result = solve_molecule_learned(
                labels.molecule, functional, info, init=init, steps=steps, xc=xc, basis=basis,
                grid_level=grid_level, optimizer=optimizer, gtol=gtol, store_coeffs=True,
                setup=setup)
            traj = np.asarray(result.trajectory.coeffs)
            kept = select_visited_steps(traj.shape[0], keep)
            samples = visited_samples(functional, xc, setup.inputs, traj, kept,
                                      coeffs_star=labels.p_ref,
                                      energy_ks=float(labels.ks_energy["e_tot"]),
                                      coulomb=np.asarray(setup.bundle.coulomb))
            entry = write_visited(out, file, samples)
            molecules[file] = {**entry, "split": split, "status": result.status,
                               "n_steps": int(result.n_steps),
                               "final_energy_error_kcal": float(samples.energy_error_kcal[-1]),
                               "final_distance": float(samples.distance[-1])}
            write_visited_manifest(out, {**identity, "molecules": molecules})
            progress.console.print(
                f"  {file}: {result.status} after {result.n_steps} steps, last state "
                f"{samples.energy_error_kcal[-1]:+.2f} kcal/mol from E_KS, "
                f"{samples.distance[-1]:.3f} from p*", highlight=False)
            progress.advance(task)
    if not (out / VISITED_MANIFEST).is_file():
        write_visited_manifest(out, {**identity, "molecules": molecules})
    rows = [molecules[f] for _, f in files]
    return {"out": str(out), "n_molecules": len(rows), "n_new": len(todo),
            "n_samples": int(sum(r["n"] for r in rows)),
            "n_converged": sum(r["status"] == "converged" for r in rows),
            "mean_final_energy_error_kcal": (float(np.mean([r["final_energy_error_kcal"]
                                                            for r in rows]))
                                             if rows else float("nan")),
            "mean_final_distance": (float(np.mean([r["final_distance"] for r in rows]))
                                    if rows else float("nan")),
            "wall_s": time.perf_counter() - t0}
