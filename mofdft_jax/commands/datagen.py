"""``mofdft datagen``: label a dataset recipe into resumable shards (Dask distributed)."""

from __future__ import annotations


import typer

from mofdft_jax.commands.output import echo_json


def _list_recipes(value: bool) -> None:
    """``--list``: print the shipped recipes (name, presets, description) and exit 0."""
    if not value:
        return
    from mofdft_jax.data.recipes import recipe_catalogue

    rows = recipe_catalogue()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        presets = ", ".join(f"{p}*" if p == r["default_preset"] else p for p in r["presets"])
        typer.echo(f"{r['name']:<{width}}  [{presets}]  {r['description']}")
    typer.echo("(* the default preset; mofdft datagen RECIPE --preset PRESET --out DIR; cards in "
               "datasets/RECIPE.md)")
    raise typer.Exit()


def datagen(
    recipe: str = typer.Argument(..., help="Recipe file, or the name of a shipped recipe in "
                                 "datasets/ (e.g. ethanol_thermal, small_molecules, smoke; "
                                 "mofdft datagen --list shows them all)."),
    out: str = typer.Option(..., "--out", help="Dataset directory (created; rerun to resume). "
                            "With --scheduler it must be writable by every worker."),
    preset: str = typer.Option(None, "--preset", help="Recipe preset: quick, cpu or paper "
                               "(default: the recipe's default_preset)."),
    workers: int = typer.Option(None, "--workers", min=0, help="Worker processes of the local "
                                "Dask cluster, one thread each (default: CPU count); 0 labels "
                                "in this process without Dask."),
    scheduler: str = typer.Option(None, "--scheduler", help="Address of an existing Dask "
                                  "scheduler, e.g. tcp://10.0.0.1:8786."),
    limit: int = typer.Option(None, "--limit", min=0, help="Label only the first N molecules of "
                              "the recipe."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Also retry molecules whose "
                                      "earlier failure was deterministic (SCF not converged)."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON object "
                                     "on stdout."),
    list_recipes: bool = typer.Option(False, "--list", is_eager=True, callback=_list_recipes,
                                      help="List the shipped recipes with their presets and "
                                      "exit."),
):
    """Run KS-DFT labels for every molecule of RECIPE that has no shard in OUT yet.

    One task per molecule; each worker writes its molecule's shard atomically, so a killed run loses
    only the molecules in flight and rerunning the same command finishes what is missing. Failures
    (SCF not converged, errors) are recorded with their reason and do not stop the run.
    """
    from mofdft_jax.data.generate import generate_dataset
    from mofdft_jax.data.recipes import load_recipe, recipe_tasks

    resolved = load_recipe(recipe, preset)
    settings = resolved.label_settings()
    tasks = recipe_tasks(resolved)
    summary = generate_dataset(tasks, settings, out, recipe=resolved.to_dict(), workers=workers,
                               scheduler=scheduler, limit=limit, retry_failed=retry_failed,
                               progress=True).to_dict()
    if json_output:
        echo_json("datagen", summary)
        return
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"datagen {summary['recipe']} ({summary['preset']}) → {summary['out_dir']}",
                  show_header=False)
    rows = [
        ("molecules", f"{summary['molecules_total']} in recipe selection: "
                      f"{summary['molecules_done']} labelled now, {summary['molecules_skipped']} "
                      f"already done or skipped, {summary['molecules_failed']} failed"),
        ("labelled SCF steps", f"{summary['labelled_steps']} in dataset "
                               f"({summary['labelled_steps_new']} new, "
                               f"{summary['labels_per_min']:.1f} labels/min)"),
        ("shards", f"{summary['shard_bytes_total'] / 1e6:.2f} MB "
                   f"({summary['shard_bytes_per_molecule'] / 1e3:.1f} kB per molecule)"),
        ("workers", str(summary["scheduler"] or summary["workers"])),
        ("wall time", f"{summary['wall_s']:.1f} s"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    for failure in summary["failures"]:
        console.print(f"[red]failed[/] {failure['name']} ({failure['kind']}): {failure['reason']}",
                      highlight=False)
