"""``mofdft reproduce``: regenerate the paper's results at a preset scale into a results folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from mofdft_jax.commands.output import echo_json


def _list_experiments(value: bool) -> None:
    """``--list``: print the experiments (run order, presets, what each reproduces) and exit 0."""
    if not value:
        return
    from reproduce.runner import experiment_catalogue

    rows = experiment_catalogue()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        typer.echo(f"{r['name']:<{width}}  [{', '.join(r['presets'])}]  {r['title']}")
    typer.echo("(run order; mofdft reproduce [EXPERIMENT ...] --preset PRESET)")
    raise typer.Exit()


def reproduce(
    experiments: Optional[List[str]] = typer.Argument(
        None, help="Experiments to run (default: all, in order; mofdft reproduce --list shows "
        "them)."),
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
    list_experiments: bool = typer.Option(False, "--list", is_eager=True,
                                          callback=_list_experiments,
                                          help="List the experiments with their presets and "
                                          "exit."),
    isolate: Optional[bool] = typer.Option(
        None, "--isolate/--in-process",
        help="Run each experiment in its own process (default when there are several), so the "
             "memory of one (compiled kernels, grids) is returned before the next starts."),
    compile_cache: bool = typer.Option(
        True, "--compile-cache/--no-compile-cache",
        help="Keep compiled XLA programs in CACHE/xla, so experiments (and reruns) that solve "
             "molecules of the same shapes load them instead of recompiling."),
):
    """Run the reproduction experiments; each writes OUT/<experiment>/ (CSV, Markdown, PNG,
    claims.csv, run_info.json). Finished experiments are skipped on rerun (resumable)."""
    from rich.console import Console

    from reproduce import runner

    names = runner.resolve_experiments(experiments)
    ctx = runner.RunContext(preset=preset, out_dir=out, cache_dir=cache or runner.default_cache_dir(),
                            seed=seed, workers=workers, force=force, progress=not json_output)
    console = Console(stderr=True)
    isolate = len(names) > 1 if isolate is None else isolate
    if not isolate:
        from mofdft_jax.config import enable_compilation_cache, keep_freed_memory

        keep_freed_memory()  # this process runs one experiment and exits
        if compile_cache:
            enable_compilation_cache(ctx.cache_dir / "xla")
    summary, failed = {}, []
    for name in names:
        config = runner.load_config(name, preset)
        if runner.is_done(ctx, name, config):
            console.print(f"[green]✓[/] {name}: already done for preset {preset} (use --force)")
            summary[name] = {"status": "cached", "dir": str(out / name)}
            continue
        console.rule(f"{name} — preset {preset}")
        t0 = time.perf_counter()
        if isolate:
            rc = _run_isolated(name, preset=preset, out=out, cache=ctx.cache_dir, seed=seed,
                               workers=workers, force=force, quiet=json_output,
                               compile_cache=compile_cache)
            path = out / name
        else:
            rc, path = 0, runner.run_experiment(name, ctx)
        wall_s = round(time.perf_counter() - t0, 1)
        if rc != 0:
            failed.append(name)
            summary[name] = {"status": "failed", "exit_code": rc, "wall_s": wall_s}
            console.print(f"[red]✗[/] {name}: failed (exit code {rc}) after {wall_s} s; "
                          "the other experiments go on, rerun to resume")
            continue
        summary[name] = {"status": "done", "dir": str(path), "wall_s": wall_s}
        console.print(f"[green]✓[/] {name}: {summary[name]['wall_s']} s → {path}")
    if verify_after:
        from reproduce.verify import verify, write_verify_report

        report = write_verify_report(verify(out), out)
        summary["verify"] = str(report)
        console.print(f"claims report: {report}")
    if json_output:
        echo_json("reproduce", summary)
    if failed:
        raise typer.Exit(1)


def _run_isolated(name: str, *, preset: str, out: Path, cache: Path, seed: int,
                  workers: Optional[int], force: bool, quiet: bool,
                  compile_cache: bool = True) -> int:
    """``mofdft reproduce NAME --in-process ...`` in a child process; its exit code.

    One process per experiment: XLA keeps every compiled kernel (one per molecule shape) and the
    experiments keep their grids and models until the process ends, so a whole preset in one
    process grew past 18 GB of 24 (cpu preset, peptide_extrapolation after four experiments) where
    each experiment alone stays far below.
    """
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "mofdft_jax.cli", "reproduce", name, "--in-process",
           "--no-verify", "--preset", preset, "--out", str(out), "--cache", str(cache),
           "--seed", str(seed)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    if force:
        cmd.append("--force")
    if not compile_cache:
        cmd.append("--no-compile-cache")
    if quiet:
        cmd.append("--json")
    return subprocess.run(cmd, stdout=subprocess.DEVNULL if quiet else None).returncode
