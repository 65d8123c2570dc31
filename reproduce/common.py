"""Shared machinery of the reproduction suite: presets, results folders, run_info, plot style.

Results contract (DESIGN.md "Results contract"): each experiment writes ``<out>/<experiment>/``
with

* ``<experiment>.csv`` — tidy data, one row per molecule / setting;
* ``<experiment>.md`` — Markdown table with the paper's value beside ours;
* ``*.png`` — figures in the shared style (:func:`apply_plot_style`);
* ``claims.csv`` — the paper claims this experiment addresses (:mod:`reproduce.verify` columns);
* ``run_info.json`` — git commit, package versions, device, preset, seeds, wall time, data
  fingerprints.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path

import pandas as pd

from reproduce.verify import MEASUREMENT_COLUMNS, load_claims

PRESETS = ("quick", "cpu", "paper")


def git_commit(repo: Path | None = None) -> str | None:
    """Current git commit of the source tree (with ``-dirty`` when it has local changes)."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("MOFDFT_GIT_COMMIT")  # set in the container image at build time


def describe_hardware() -> str:
    """The machine in words, e.g. '2-core CPU (x86_64), 24 GiB' or '1x NVIDIA H100 80GB HBM3'."""
    import jax

    devices = jax.devices()
    if devices and devices[0].platform == "gpu":
        kinds = sorted({d.device_kind for d in devices})
        return f"{len(devices)}x {', '.join(kinds)}"
    mem_gib = None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as fh:
            mem_gib = round(int(fh.readline().split()[1]) / 2**20)
    mem = f", {mem_gib} GiB" if mem_gib else ""
    return f"{os.cpu_count()}-core CPU ({platform.machine()}){mem}"


def collect_run_info(experiment: str, preset: str, seeds: dict, wall_s: float,
                     data_fingerprints: dict | None = None, extra: dict | None = None) -> dict:
    """The ``run_info.json`` record of one experiment run."""
    from mofdft_jax.commands.info import collect_environment_info

    env = collect_environment_info()
    return {
        "experiment": experiment,
        "preset": preset,
        "git_commit": git_commit(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": describe_hardware(),
        "device": env["jax_devices"],
        "jax_backend": env["jax_backend"],
        "jax_enable_x64": env["jax_enable_x64"],
        "versions": {"mofdft_jax": env["mofdft_jax"], "python": env["python"], **env["packages"]},
        "seeds": seeds,
        "wall_s": round(float(wall_s), 2),
        "data_fingerprints": data_fingerprints or {},
        **(extra or {}),
    }


def claims_frame(rows: list[dict]) -> pd.DataFrame:
    """A ``claims.csv`` frame; the unit of each row is taken from ``paper_claims.csv``."""
    claims = load_claims()
    out = []
    for row in rows:
        cid = row["claim_id"]
        if cid not in claims.index:
            raise KeyError(f"unknown claim {cid}")
        out.append({"unit": claims.loc[cid, "unit"], "note": "", **row})
    return pd.DataFrame(out, columns=MEASUREMENT_COLUMNS)


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub Markdown table of a DataFrame (no tabulate dependency)."""
    cols = list(frame.columns)

    def cell(x):
        if isinstance(x, float):
            return format(x, floatfmt) if pd.notna(x) else "—"
        return str(x)

    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def paper_vs_ours_table(claims_df: pd.DataFrame) -> str:
    """Markdown table putting each claim's paper value beside ours."""
    paper = load_claims()
    rows = []
    for r in claims_df.itertuples(index=False):
        c = paper.loc[r.claim_id]
        rows.append({"claim": r.claim_id, "quantity": c["quantity"], "system (paper)": c["system"],
                     "paper": float(c["value"]), "ours": float(r.value), "unit": r.unit,
                     "our workload": r.workload, "hardware": r.hardware, "kind": r.kind})
    return markdown_table(pd.DataFrame(rows))


def write_experiment(out_dir: Path, experiment: str, table: pd.DataFrame, claims: pd.DataFrame,
                     run_info: dict, markdown_intro: str = "", figures: dict | None = None,
                     extra_tables: dict[str, pd.DataFrame] | None = None) -> Path:
    """Write one experiment's results folder (contract in the module docstring)."""
    exp_dir = Path(out_dir) / experiment
    exp_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(exp_dir / f"{experiment}.csv", index=False)
    claims.to_csv(exp_dir / "claims.csv", index=False)
    for name, fig in (figures or {}).items():
        fig.savefig(exp_dir / f"{name}.png", dpi=130, bbox_inches="tight")
    md = [f"# {experiment}", "", f"Preset `{run_info['preset']}`, {run_info['hardware']}, "
          f"commit `{run_info['git_commit']}`, {run_info['date_utc']}, wall {run_info['wall_s']} s.", ""]
    if markdown_intro:
        md += [markdown_intro.strip(), ""]
    if len(claims):
        md += ["## Paper vs ours", "", paper_vs_ours_table(claims), ""]
    md += ["## Data", "", markdown_table(table), ""]
    for name, frame in (extra_tables or {}).items():
        frame.to_csv(exp_dir / f"{name}.csv", index=False)
        md += [f"## {name}", "", markdown_table(frame), ""]
    for name in figures or {}:
        md += [f"![{name}]({name}.png)", ""]
    (exp_dir / f"{experiment}.md").write_text("\n".join(md))
    (exp_dir / "run_info.json").write_text(json.dumps(run_info, indent=2) + "\n")
    return exp_dir


def apply_plot_style():
    """The one matplotlib style of every figure (Agg backend, readable sizes, colour-blind palette)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "figure.figsize": (6.0, 4.0), "figure.dpi": 110, "font.size": 10, "axes.grid": True,
        "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
        "legend.frameon": False, "savefig.bbox": "tight",
        "axes.prop_cycle": matplotlib.cycler(color=["#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                                    "#E69F00", "#56B4E9", "#F0E442", "#000000"]),
    })
    return plt
