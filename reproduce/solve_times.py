"""Wall time of one 1000-step M-OFDFT density optimisation per structure (release README timings).

The authors' release README gives, per structure and one NVIDIA A100 80 GB, 1000 steps: ethanol
**29.7 s** and a QM9 molecule **51.2 s** with the T_S,res model, chignolin **236.7 s** with the
E_tot model (spec §4, "README reference wall times"; ``paper_claims.csv``: ``ethanol_solve_time``,
``qm9_solve_time``, ``chignolin_solve_time``).

Each structure gets one end-to-end run in its own process (:func:`mofdft_jax.bench.ofdft.run_ofdft`:
bases, integrals and grid, adapter geometry, initial guess, 1000 projected-gradient steps,
compilation included), with the paper's network size (``paper`` / ``paper_ethanol`` config,
≈45 M parameters) **untrained**: the time of a step does not depend on the weights, and the
solver runs every step (``max_rise = inf``; a run that stops early is marked ``incomplete`` and
claims nothing). The initial density is the per-element MINAO (the Δp head is evaluated and timed
but not applied: untrained). T_S,res runs carry the APBE + PBE grid terms on the level-2 grid.

The QM9 structure is a stand-in of QM9 size (salicylaldehyde, C7H6O2: 9 heavy atoms, QM9's
maximum), named so in every table. The claim value is the whole run's wall time (``wall_s``); the
solve alone, its compilation and the time per step are in the table beside it.

Presets: ``micro`` (tests: tiny networks, STO-3G, 5 steps); ``cpu`` and ``paper`` (the same three
runs; on the 2-core CPU they take 29.7 min, chignolin 17.7 min of it (measured 2026-11-26), so
the experiment is not part of the 90-minute ``mofdft reproduce --preset cpu``: run
``python -m reproduce.solve_times --preset cpu --out results``). Runs already measured at the same
commit on the same hardware are reused (``<cache>/<preset>/solve_times/``), so an interrupted run
resumes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mofdft_jax.bench import run_isolated, system_file
from reproduce import pipeline as pl
from reproduce.common import (apply_plot_style, claims_frame, describe_hardware, git_commit,
                              markdown_table)

EXPERIMENT = "solve_times"
#: The release README's A100 times (s) per claim, with the paper's functional target.
PAPER = {"ethanol_solve_time": (29.7, "ts_res", "ethanol"),
         "qm9_solve_time": (51.2, "ts_res", "QM9 molecule"),
         "chignolin_solve_time": (236.7, "tot", "chignolin")}


def _job(run: dict, config: dict, cache: Path) -> dict:
    job = {"kind": "ofdft", "system": str(system_file(run["system"], cache)),
           "functional": run["functional"], "steps": int(config["steps"]),
           "lr": float(config.get("lr", 1e-3)), "mode": run.get("mode", "auto")}
    for key in ("grid_level", "basis"):
        if key in run:
            job[key] = run[key]
    return job


def measure(run: dict, config: dict, cache: Path, store: Path, commit: str | None,
            hardware: str) -> dict:
    """One isolated timing run, reused from ``store`` when the same job was measured at the same
    commit on the same ``hardware`` (resumability)."""
    job = _job(run, config, cache)
    key = hashlib.sha256(json.dumps([job, commit, hardware], sort_keys=True).encode()).hexdigest()
    path = store / f"{run['claim']}-{key[:12]}.json"
    if commit and path.exists():
        return json.loads(path.read_text())
    record = run_isolated(job, timeout_s=config.get("ofdft_max_run_s"),
                          threads=config.get("threads"))
    record.pop("model_config", None)
    record.update({"measured_at_utc": _dt.datetime.now(_dt.timezone.utc)
                   .isoformat(timespec="seconds"), "measured_commit": commit})
    if record.get("status") == "ok" and commit:
        store.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, default=float))
    return record


def make_figure(summary: pd.DataFrame, hardware: str):
    """Ours (this machine) beside the paper's A100 time, per structure, log scale."""
    plt = apply_plot_style()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    x = np.arange(len(summary))
    ax.bar(x - 0.2, summary["ours_s"], 0.4, color="#0072B2", label=f"ours ({hardware})")
    ax.bar(x + 0.2, summary["paper_s"], 0.4, color="#D55E00", label="paper (1x A100 80 GB)")
    labels = [str(name).replace(" (", "\n(") for name in summary["structure"]]
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("wall time of one 1000-step solve (s)")
    ax.legend(fontsize=7)
    ax.set_title("M-OFDFT time per structure")
    return fig


def run(ctx, folder: str = EXPERIMENT) -> Path:
    """Run the experiment at ``ctx.preset`` and write ``ctx.out_dir/<folder>``."""
    t0, cpu0 = time.perf_counter(), pl.cpu_seconds()
    config = pl.load_experiment_config(EXPERIMENT, ctx.preset)
    cache = ctx.preset_cache / "bench"
    store = ctx.preset_cache / EXPERIMENT
    hardware = describe_hardware()
    commit = git_commit()
    rows, claims, summary = [], [], []
    for spec in config["runs"]:
        r = measure(spec, config, cache, store, commit, hardware)
        stand_in = bool(spec.get("stand_in", False))
        row = {"claim": spec["claim"], "system": spec["system"], "stand_in": stand_in,
               "hardware": hardware, **r}
        rows.append(row)
        paper_s, paper_target, paper_system = PAPER[spec["claim"]]
        name = f"{paper_system}{' (stand-in: ' + spec['system'] + ')' if stand_in else ''}"
        if r.get("status") != "ok":
            continue
        config_name = spec["functional"].split(":")[1] if spec["functional"].startswith(
            "fresh:") else "checkpoint"
        same = (config_name.startswith("paper") and int(config["steps"]) == 1000
                and r.get("target") == paper_target and not stand_in)
        workload = (f"{r.get('molecule')} ({r.get('n_atoms')} atoms, {r.get('n_electrons')} "
                    f"electrons, naux {r.get('naux')}), {r.get('n_steps')} steps, "
                    f"{r.get('functional_description')}, {r.get('mode')} path"
                    + (f", grid level {r['grid_level']} ({r['n_grid_points']} points)"
                       if r.get("grid_level") is not None else "")
                    + ("; stand-in structure" if stand_in else ""))
        claims.append({"claim_id": spec["claim"], "value": float(r["wall_s"]), "n": 1,
                       "scale": "paper" if same else "different", "kind": "measured",
                       "workload": workload, "hardware": hardware, "preset": ctx.preset,
                       "note": f"whole run incl. set-up and compilation; solve "
                               f"{r.get('solve_s', np.nan):.1f} s, {r.get('step_ms', np.nan):.1f}"
                               f" ms/step; untrained weights (timing only); paper: 1x A100"})
        summary.append({"structure": name, "atoms": r.get("n_atoms"),
                        "electrons": r.get("n_electrons"), "functional": spec["functional"],
                        "ours_s": float(r["wall_s"]), "solve_s": r.get("solve_s"),
                        "compile_s": r.get("compile_s"), "step_ms": r.get("step_ms"),
                        "peak_rss_gib": r.get("peak_rss_mb", np.nan) / 1024,
                        "paper_s": paper_s, "ours_over_paper": float(r["wall_s"]) / paper_s,
                        "measured_utc": r.get("measured_at_utc")})
    table = pd.DataFrame(rows)
    summary = pd.DataFrame(summary)
    intro = "\n".join([
        "Wall time of one 1000-step M-OFDFT solve per structure against the release README's "
        "A100 times (module docstring of `reproduce/solve_times.py`). Untrained networks of the "
        "paper's size (the time does not depend on the weights); every run in its own process; "
        f"machine: {hardware}.",
        "",
        markdown_table(summary) if len(summary) else "No run completed.",
    ])
    figures = {"solve_times": make_figure(summary, hardware)} if len(summary) else {}
    return pl.finish_experiment(ctx, folder, config, t0=t0, cpu0=cpu0, table=table,
                                claims=claims_frame(claims), data_fingerprints={}, intro=intro,
                                figures=figures, extra_tables={"summary": summary},
                                extra_info={"runs_wall_s": float(sum(
                                    float(r.get("process_wall_s", r.get("wall_s", 0.0)))
                                    for r in rows))})


def main(argv=None) -> int:
    """``python -m reproduce.solve_times --preset cpu --out results``."""
    from mofdft_jax.config import enable_x64
    from reproduce.runner import RunContext, default_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args(argv)
    enable_x64()
    ctx = RunContext(preset=args.preset, out_dir=args.out,
                     cache_dir=args.cache or default_cache_dir(), progress=False)
    print(run(ctx))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
