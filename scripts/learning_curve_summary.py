"""Summarise scripts/learning_curve.sh: CSV, Markdown, PNG and run_info.json of the learning curve.

For each network config and training size N: the mean absolute error of the learned total energy at
the KS densities p* of the held-out test conformers (E(p*) − E_KS, no minimisation), the
validation energy MAE at the labelled SCF steps, and, where it was run, the converged
precond-lbfgs minimisation from ProjMINAO (mean and mean absolute E_end − E_KS, fraction
converged). A power law MAE = a·N^(−b) is fitted (least squares in log–log) to the at-p* MAE of
each config and extrapolated to the paper's 80,000 training structures and to the N at which it
would reach 1 kcal/mol.

usage: python scripts/learning_curve_summary.py OUT_DIR RESULTS_DIR
"""

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAPER_TRAIN_SIZE = 80_000
TARGET_KCAL = 1.0


def read_runs(out: Path) -> pd.DataFrame:
    """One row per finished (config, N) run of ``out``."""
    rows = []
    for train_path in sorted(out.glob("*_n*_train.json")):
        match = re.fullmatch(r"(.+)_n(\d+)_train\.json", train_path.name)
        config, n = match.group(1), int(match.group(2))
        stem = out / f"{config}_n{n}"
        train = json.loads(train_path.read_text())
        row = {"config": config, "n_train": n, "n_parameters": train["n_parameters"],
               "epochs": train["epochs"], "optimiser_steps": train["steps"],
               "train_wall_s": train["train_wall_s"],
               "val_energy_mae_kcal": train["best"].get("val_energy_mae_kcal")}
        at_ref = stem.with_name(stem.name + "_at_ref.json")
        if not at_ref.is_file():
            continue
        errors = np.array([r["energy_error_at_ref_kcal"] for r in json.loads(at_ref.read_text())])
        row.update(n_test=len(errors), at_ref_mae_kcal=float(np.mean(np.abs(errors))),
                   at_ref_mean_kcal=float(np.mean(errors)))
        converged = stem.with_name(stem.name + "_converged.json")
        if converged.is_file():
            runs = json.loads(converged.read_text())
            final = np.array([r["energy_error_final_kcal"] for r in runs])
            row.update(n_converged_test=len(runs),
                       converged_fraction=float(np.mean([r.get("solve_status") == "converged"
                                                         for r in runs])),
                       converged_mean_kcal=float(np.mean(final)),
                       converged_mae_kcal=float(np.mean(np.abs(final))),
                       converged_distance=float(np.mean([r["final_distance"] for r in runs])))
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["config", "n_train"]).reset_index(drop=True)


def fit_power_law(n: np.ndarray, mae: np.ndarray) -> dict:
    """MAE = a·N^(−b) by least squares on (log N, log MAE); with the extrapolations."""
    slope, intercept = np.polyfit(np.log(n), np.log(mae), 1)
    a, b = float(np.exp(intercept)), float(-slope)
    residual = np.log(mae) - (intercept + slope * np.log(n))
    return {"a": a, "b": b, "rms_log_residual": float(np.sqrt(np.mean(residual ** 2))),
            "mae_at_paper_size_kcal": a * PAPER_TRAIN_SIZE ** (-b),
            "n_for_target": (a / TARGET_KCAL) ** (1 / b) if b > 0 else float("inf")}


def main(out: Path, results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reproduce.common import collect_run_info

    results.mkdir(parents=True, exist_ok=True)
    frame = read_runs(out)
    frame.to_csv(results / "learning_curve.csv", index=False)
    fits = {c: fit_power_law(g["n_train"].to_numpy(float), g["at_ref_mae_kcal"].to_numpy())
            for c, g in frame.groupby("config") if len(g) >= 3}

    fig, ax = plt.subplots(figsize=(6, 4.2))
    grid = np.geomspace(frame["n_train"].min(), PAPER_TRAIN_SIZE, 200)
    for (config, g), color in zip(frame.groupby("config"), ("C0", "C1", "C2", "C3")):
        ax.loglog(g["n_train"], g["at_ref_mae_kcal"], "o", color=color,
                  label=f"{config}: |E(p*) − E_KS| (test)")
        if "converged_mae_kcal" in g and g["converged_mae_kcal"].notna().any():
            h = g[g["converged_mae_kcal"].notna()]
            ax.loglog(h["n_train"], h["converged_mae_kcal"], "s", mfc="none", color=color,
                      label=f"{config}: |E_end − E_KS| (converged)")
        if config in fits:
            f = fits[config]
            ax.loglog(grid, f["a"] * grid ** (-f["b"]), "--", color=color, lw=1,
                      label=f"fit {f['a']:.3g}·N^−{f['b']:.2f}")
    ax.axhline(TARGET_KCAL, color="k", lw=0.8, ls=":")
    ax.axvline(PAPER_TRAIN_SIZE, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training conformers N")
    ax.set_ylabel("energy MAE (kcal/mol)")
    ax.set_title("Ethanol learning curve (PBE/6-31G, perturbed labels, 2-core CPU)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(results / "learning_curve.png", dpi=150)

    cols = ["config", "n_train", "n_parameters", "epochs", "optimiser_steps", "train_wall_s",
            "val_energy_mae_kcal", "n_test", "at_ref_mae_kcal", "at_ref_mean_kcal",
            "n_converged_test", "converged_fraction", "converged_mean_kcal",
            "converged_mae_kcal", "converged_distance"]
    cols = [c for c in cols if c in frame]
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        table.append("| " + " | ".join("—" if pd.isna(r[c]) else
                                       (f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]))
                                       for c in cols) + " |")
    fit_lines = [f"| {c} | {f['a']:.3g} | {f['b']:.3f} | {f['rms_log_residual']:.3f} | "
                 f"{f['mae_at_paper_size_kcal']:.3g} | {f['n_for_target']:.3g} |"
                 for c, f in fits.items()]
    text = ["# Learning curve: ethanol, perturbed-potential labels (issue 19)", "",
            "Command: `bash scripts/learning_curve.sh OUT` (recipe "
            "`scripts/ethanol_learning_curve.toml`: 401 thermal ethanol conformers, PBE/6-31G, "
            "grid level 1, one perturbed SCF run each, split 8:1:1), then "
            f"`python scripts/learning_curve_summary.py OUT {results}`. Machine: 2-core x86_64 "
            "CPU, 24 GiB, no GPU, shared with other jobs. Training sizes are nested prefixes of the "
            "train split (`mofdft train --train-size N --val-size 20`), each trained for the same "
            "budget of optimiser steps (batch 32, loss weights 1/20/0.08, L1, lr 5e-4). "
            "`at_ref`: the learned total energy at the KS densities of the first `n_test` test "
            "conformers, no minimisation (`mofdft diagnose --steps 0`); `converged`: precond-lbfgs "
            "from ProjMINAO to |P∇E| ≤ 1e-4 (≤ 300 steps) on the first `n_converged_test`.", "",
            *table, "",
            f"Power-law fits of the at-p* MAE, MAE = a·N^(−b), extrapolated to the paper's "
            f"{PAPER_TRAIN_SIZE:,} training structures and to the N where it reaches "
            f"{TARGET_KCAL:g} kcal/mol:", "",
            "| config | a | b | rms log residual | MAE at 80,000 (kcal/mol) | N for 1 kcal/mol |",
            "|---|---|---|---|---|---|", *fit_lines, "",
            "The fit extrapolates the error at the KS density only: it says what data the energy "
            "values need, not whether the minimisation finds p* (the converged columns; "
            "docs/landscape.md). Every run has the same optimiser-step budget, so the largest "
            "sizes see the fewest epochs (`epochs` column): a flattening at large N can be the "
            "budget rather than the data, and the fitted exponent is then a lower bound on what "
            "longer training would give.", "", "![learning curve](learning_curve.png)", ""]
    (results / "learning_curve.md").write_text("\n".join(text))
    wall = float(frame["train_wall_s"].sum())
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    info = collect_run_info("learning_curve", "cpu-scale (scripts/learning_curve.sh)",
                            {"seed": 0, "split_seed": 0}, wall,
                            {"dataset_settings_hash": manifest.get("settings_hash"),
                             "dataset_molecules_fingerprint": manifest.get("molecules_fingerprint")},
                            {"fits": fits, "train_wall_s_total": wall,
                             "summarised_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    (results / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
