"""Summarise scripts/ablation_perturbed.sh: one Markdown table and one CSV from its JSON outputs.

usage: python scripts/ablation_perturbed_summary.py OUT_DIR RESULTS_DIR
"""

import csv
import json
import platform
import sys
from pathlib import Path

import numpy as np

PRESETS = ("plain", "perturbed", "curvature", "curvature200", "quadratic", "visited_r1",
           "visited_r2", "visited_b10")


def preset_order(name: str) -> tuple:
    """The table order: the named presets, then the fine-tuning rounds ft_rN by N."""
    if name in PRESETS:
        return (PRESETS.index(name), 0)
    if name.startswith("ft_r") and name[4:].isdigit():
        return (len(PRESETS), int(name[4:]))
    return (len(PRESETS) + 1, name)
COLUMNS = [("energy_error_at_ref_kcal", "E(p*) − E_KS (kcal/mol)"),
           ("proj_grad_norm_at_ref", "‖P∇E(p*)‖"),
           ("n_negative_modes", "negative modes at p*"),
           ("lowest_eigenvalue", "lowest eigenvalue"),
           ("init_distance", "‖p₀ − p*‖_W (ProjMINAO)"),
           ("final_distance", "‖p_end − p*‖_W"),
           ("energy_error_final_kcal", "E_end − E_KS (kcal/mol)"),
           ("converged", "converged")]


def steps_range(rows: list[dict]) -> str:
    """'min–max' of the precond-lbfgs step counts in the table."""
    steps = [r["solve_steps"] for r in rows
             if r["optimizer"] == "precond-lbfgs" and r["solve_steps"] is not None]
    return f"{min(steps)}–{max(steps)}" if steps else "—"


def main(out_dir: Path, results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in sorted(out_dir.glob("*_diagnose_*.json")):
        preset, optimizer = path.stem.split("_diagnose_")
        model = json.loads((out_dir / f"{preset}_model.json").read_text())["extra"]
        for r in json.loads(path.read_text()):
            w = model["train_config"]["weights"]
            rows.append({"labels": preset, "optimizer": optimizer, "molecule": r["molecule"],
                         "weights": "/".join(f"{w.get(k, 0):g}" for k in
                                             ("energy", "grad", "delta", "hvp", "curv", "bound")),
                         "train_rows": model["n_train_steps"], "epochs": model["epochs_completed"],
                         "val_energy_mae_kcal": model["metrics"]["val_energy_mae_kcal"],
                         "lowest_eigenvalue": r.get("lowest_eigenvalues", [np.nan])[0],
                         "converged": r.get("solve_status") == "converged",
                         "solve_steps": r.get("solve_steps"), **{k: r.get(k) for k, _ in COLUMNS
                                                                 if k not in ("lowest_eigenvalue",
                                                                              "converged")}})
    keys = list(rows[0])
    with open(results / "ablation_landscape.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| labels | optimiser | train rows / epochs | val E MAE (kcal/mol) | "
             + " | ".join(t for _, t in COLUMNS) + " |",
             "|" + "---|" * (4 + len(COLUMNS))]
    groups = sorted({(r["labels"], r["optimizer"]) for r in rows},
                    key=lambda g: (preset_order(g[0]), g[1]))
    for preset, optimizer in groups:
        sel = [r for r in rows if (r["labels"], r["optimizer"]) == (preset, optimizer)]

        def cell(key):
            vals = [r[key] for r in sel]
            if key == "converged":
                return f"{sum(vals)}/{len(vals)}"
            if key == "n_negative_modes":
                return "/".join(str(v) for v in vals)
            return " / ".join(f"{v:.3g}" for v in vals)

        lines.append(f"| {preset} | {optimizer} | {sel[0]['train_rows']} / {sel[0]['epochs']} | "
                     f"{sel[0]['val_energy_mae_kcal']:.2f} | "
                     + " | ".join(cell(k) for k, _ in COLUMNS) + " |")
    compact = ["| model | loss weights E/G/Δ/H/C/B | train rows | negative modes at p* | 1000 SGD steps: E − E_KS, ‖p − p*‖_W | "
               "converged (precond-lbfgs): E − E_KS, ‖p − p*‖_W, converged |", "|---|---|---|---|---|---|"]
    for preset in sorted({r["labels"] for r in rows}, key=preset_order):
        sgd = [r for r in rows if (r["labels"], r["optimizer"]) == (preset, "sgd")]
        conv = [r for r in rows if (r["labels"], r["optimizer"]) == (preset, "precond-lbfgs")]
        if not conv:
            continue

        def mean(sel, key):
            return float(np.mean([r[key] for r in sel]))

        compact.append(
            f"| {preset} | {conv[0]['weights']} | {conv[0]['train_rows']} | "
            + f"{mean(conv, 'n_negative_modes'):.1f} ({min(r['n_negative_modes'] for r in conv)}–"
            f"{max(r['n_negative_modes'] for r in conv)}) | "
            + (f"{mean(sgd, 'energy_error_final_kcal'):+.1f} kcal/mol, "
               f"{mean(sgd, 'final_distance'):.3f} | " if sgd else "— | ")
            + f"{mean(conv, 'energy_error_final_kcal'):+.1f} kcal/mol, "
            f"{mean(conv, 'final_distance'):.3f}, {sum(r['converged'] for r in conv)}/{len(conv)} |")
    (results / "ablation_landscape_compact.md").write_text("\n".join(compact) + "\n")
    text = ["# Landscape ablation: plain, perturbed-potential and curvature labels (issue 19)", "",
            "Command: `scripts/ablation_perturbed.sh` (recipe "
            "`scripts/ethanol_perturbed_ablation.toml`), then "
            f"`python scripts/ablation_perturbed_summary.py OUT {results}`.",
            f"Machine: {platform.machine()} CPU, 2 cores, 24 GiB (no GPU). Scale: 41 thermal "
            "ethanol conformers (33 train / 4 val / 4 test), PBE/6-31G, grid level 1, small "
            "network; diagnosed on the 4 test conformers (one value per molecule, in order).",
            "", "Models: `plain`, `perturbed`, `curvature` are the script's three presets; "
            "`curvature200` (vector curvature weight 200) and `quadratic` (scalar curvature "
            "weight 0.2, no vector term) are the curvature labels trained with other weights "
            "(`mofdft train --data OUT/curvature --loss-weights ...`, otherwise the script's "
            "arguments). 45 epochs each except plain (200 requested, early-stopped).",
            *([] if not any(r["labels"].startswith("visited") for r in rows) else [
                "`visited_rN`: the perturbed labels plus the label-free bounds (weight B) at "
                "the densities visited by precond-lbfgs minimisations of the round-(N−1) model "
                "(round 0: `perturbed`) on the train+val conformers (`mofdft sample-visited`, "
                "then `mofdft train --visited`; train rows include the visited states). Round N: "
                "`mofdft sample-visited OUT/<round N−1 model> --data OUT/perturbed --out "
                "OUT/visited_rN`, then `mofdft train --data OUT/perturbed --visited OUT/visited_r1 "
                "[... --visited OUT/visited_rN] --out OUT/visited_rN_model --epochs 45 "
                "--loss-weights 1,20,0.08,0,0,1 --config small --target ts_res --batch-size 32 "
                "--lr 5e-4 --norm l1 --dropout 0 --seed 0`, diagnosed like the others. "
                "`visited_b10`: `visited_r2` with bound weight 10. `ft_rN` (fine-tuning "
                "rounds): round N samples with ft_r(N−1) (ft_r1 = visited_r1), then "
                "fine-tunes it on all rounds' states: `mofdft train ... --init-from "
                "OUT/ft_r(N−1)_model --visited OUT/visited_r1 ... --visited OUT/visited_rN "
                "--epochs 20 --lr 2e-4` (otherwise as above); ft_r2 fine-tunes visited_r1 on "
                "visited_r1 + visited_r2, whose states that model itself visited. One command runs "
                "round 1 and the fine-tuning rounds: `bash scripts/adaptive_sampling.sh OUT` "
                "(ROUNDS=4)."]),
            "",
            "Means over the 4 test conformers:", "", *compact, "", "Per molecule:", "",
            *lines, "",
            "Columns: E(p*) − E_KS is the learned total energy at the KS density; negative modes "
            "count the eigenvalues < 0 of the Hessian at p* in the Coulomb metric on wᵀδ = 0; "
            "‖·‖_W is the Coulomb norm; E_end is the last iterate (sgd: 1000 steps, the paper's "
            f"lr 5e-4; precond-lbfgs: stopped at ‖P∇E‖ ≤ 1e-4, after {steps_range(rows)} steps). "
            "KS: PBE/6-31G, "
            "grid level 1, the labels' own settings.", ""]
    (results / "ablation_landscape.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
