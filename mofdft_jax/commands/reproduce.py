"""``mofdft reproduce``: regenerate the paper's results at a preset scale into a results folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer


def reproduce(
    experiments: Optional[List[str]] = typer.Argument(
        None, help="Experiments to run (default: all, in order)."),
    preset: str = typer.Option("quick", "--preset", "-p", help="quick | cpu | paper"),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Results folder."),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Cache for labels and checkpoints (default $MOFDFT_CACHE or "
        "~/.cache/mofdft_jax)."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Dask workers for labels."),
    force: bool = typer.Option(False, "--force", help="Rerun experiments that already finished."),
    verify_after: bool = typer.Option(True, "--verify/--no-verify",
                                      help="Write OUT/VERIFY.md afterwards."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
):
    """Run the reproduction experiments; each writes OUT/<experiment>/ (CSV, Markdown, PNG,
    claims.csv, run_info.json). Finished experiments are skipped on rerun (resumable)."""
    from rich.console import Console

    from reproduce import runner

    names = runner.resolve_experiments(experiments)
    ctx = runner.RunContext(preset=preset, out_dir=out, cache_dir=cache or runner.default_cache_dir(),
                            seed=seed, workers=workers, force=force, progress=not json_output)
    console = Console(stderr=True)
    summary = {}
    for name in names:
        config = runner.load_config(name, preset)
        if runner.is_done(ctx, name, config):
            console.print(f"[green]✓[/] {name}: already done for preset {preset} (use --force)")
            summary[name] = {"status": "cached", "dir": str(out / name)}
            continue
        console.rule(f"{name} — preset {preset}")
        t0 = time.perf_counter()
        path = runner.run_experiment(name, ctx)
        summary[name] = {"status": "done", "dir": str(path), "wall_s": round(time.perf_counter() - t0, 1)}
        console.print(f"[green]✓[/] {name}: {summary[name]['wall_s']} s → {path}")
    if verify_after:
        from reproduce.verify import verify, write_verify_report

        report = write_verify_report(verify(out), out)
        summary["verify"] = str(report)
        console.print(f"claims report: {report}")
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
