"""In-scale accuracy (spec §5.2, SI Table S5, Fig. 2a): M-OFDFT against KS-DFT and against the
classical orbital-free functionals, on ethanol conformers and on a set of small molecules.

For each system of the preset's config (``ethanol``: thermal conformers, the MD17 stand-in;
``small_molecules``: the curated ≤ 6-heavy-atom set, the QM9 stand-in):

* a labelled dataset (:func:`reproduce.pipeline.ensure_dataset`) and a learned functional per
  target ∈ {``ts_res``, ``txc``} (trained here, or a shipped checkpoint at the ``quick`` preset);
* OFDFT on the held-out test molecules from each init ∈ {Hückel, ProjMINAO} with the paper's
  protocol (1000 projected-gradient steps, step size 5·10⁻⁴ for ethanol and 1·10⁻³ otherwise, the
  IID reporting rule; spec §4.4–§4.5), and the classical functionals TF, TF+1/9vW, TF+vW and APBE
  (with PBE XC) from MINAO on the same molecules;
* absolute energy MAE against the KS total energy and HF-force MAE against the HF forces of the
  fitted KS density (spec §5.1); relative-energy MAE — ethanol: E_i − E_eq against the equilibrium
  structure; small molecules: all pairs of test isomers (same formula);
* the "two orders of magnitude" claim as a measured ratio: the smallest relative-energy MAE of the
  classical functionals divided by M-OFDFT's (``ts_res`` from ProjMINAO), the smaller ratio of the
  systems.

Outputs: ``accuracy_in_scale.csv`` (one row per molecule × method × init), ``summary.csv``
(per system × method × init), ``relative.csv`` (every relative-energy error), the Markdown table
with SI Table S5 beside ours, ``fig2a.png`` (log-axis bars like Fig. 2a) and ``claims.csv``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from reproduce import pipeline as pl
from reproduce.common import apply_plot_style, claims_frame, describe_hardware, markdown_table

EXPERIMENT = "accuracy_in_scale"

#: SI Table S5 (energy MAE kcal/mol, HF-force MAE kcal/mol/Å) by (system, target, init).
PAPER_TABLE_S5 = {
    ("ethanol", "ts_res", "huckel"): (5.27, 27.73),
    ("ethanol", "ts_res", "projminao"): (0.18, 1.18),
    ("ethanol", "txc", "huckel"): (3.95, 126.65),
    ("ethanol", "txc", "projminao"): (0.18, 2.07),
    ("small_molecules", "ts_res", "huckel"): (9.88, 12.73),
    ("small_molecules", "ts_res", "projminao"): (0.93, 2.91),
    ("small_molecules", "txc", "huckel"): (9.69, 123.51),
    ("small_molecules", "txc", "projminao"): (0.73, 4.73),
}
#: Release README: M-OFDFT relative-energy MAE (ethanol vs equilibrium; QM9 isomer pairs).
PAPER_RELATIVE = {"ethanol": 0.22, "small_molecules": 1.18}
#: claims.csv ids by (system, target, init) → (energy claim, force claim).
CLAIM_IDS = {
    ("ethanol", "ts_res", "projminao"): ("ethanol_energy_mae", "ethanol_force_mae"),
    ("ethanol", "ts_res", "huckel"): ("ethanol_energy_mae_huckel", "ethanol_force_mae_huckel"),
    ("ethanol", "txc", "projminao"): ("ethanol_energy_mae_txc", "ethanol_force_mae_txc"),
    ("small_molecules", "ts_res", "projminao"): ("qm9_energy_mae", "qm9_force_mae"),
    ("small_molecules", "txc", "projminao"): ("qm9_energy_mae_txc", "qm9_force_mae_txc"),
}
RELATIVE_CLAIMS = {"ethanol": "ethanol_rel_energy_mae",
                   "small_molecules": "qm9_isomer_rel_energy_mae"}
#: How our systems relate to the paper's (claims.csv ``scale``): ethanol thermal conformers are a
#: reduced stand-in for MD17 ethanol; the curated small molecules a different set than QM9.
SYSTEM_SCALE = {"ethanol": "reduced", "small_molecules": "different"}
SYSTEMS = ("ethanol", "small_molecules")
HEADLINE_INIT = "projminao"


def learned_name(target: str) -> str:
    """Row label of the learned functional with ``target``."""
    return f"M-OFDFT {target}"


def prepare_system(ctx, name: str, scfg: dict, targets, *, label_prefix: str = ""):
    """Dataset, evaluation files, reference file and checkpoints of one system.

    Returns:
      ``(data, files, reference, checkpoints)``: the :class:`~reproduce.pipeline.DatasetHandle`,
      the test files to evaluate, the equilibrium file (or ``None``) and ``{target:
      CheckpointHandle}``.
    """
    data = pl.ensure_dataset(ctx, pl.DatasetSpec.from_config(scfg["dataset"]),
                             only_split=scfg.get("only_split"),
                             max_molecules=scfg.get("max_label"),
                             include_reference=bool(scfg.get("relative_to_reference", False)))
    reference = pl.reference_file(data) if scfg.get("relative_to_reference") else None
    split = scfg.get("eval_split", "test")
    pool = list(data.files) if split == "all" else list(data.splits.get(split, []))
    files = [f for f in pool if f != reference]
    files = files[: int(scfg.get("max_eval", 10**9))]
    checkpoints = {}
    shipped = scfg.get("checkpoints", {})
    for target in targets:
        if target in shipped:
            checkpoints[target] = pl.resolve_checkpoint(shipped[target], learned_name(target))
        elif "model" in scfg:
            spec = pl.ModelSpec.from_config(scfg["model"], target=target)
            checkpoints[target] = pl.ensure_checkpoint(ctx, data, spec,
                                                       label=learned_name(target))
    return data, files, reference, checkpoints


def system_runs(config: dict, scfg: dict, checkpoints: dict) -> tuple[list, list]:
    """``(learned runs, classical runs)`` of one system: learned × inits; the classical
    functionals (``classical`` of the system table, else of the experiment) from
    ``classical_init``."""
    learned = [pl.Run(pl.learned_method(ck, learned_name(target)), init)
               for target, ck in checkpoints.items() for init in config["inits"]]
    classical = [pl.Run(pl.classical_method(kinetic, lr=scfg.get("classical_lr")),
                        config.get("classical_init", "minao"))
                 for kinetic in scfg.get("classical", config.get("classical", []))]
    return learned, classical


def summarise(frame: pd.DataFrame, relative: pd.DataFrame) -> pd.DataFrame:
    """Per (system, method, init): n, energy MAE ± 95 % CI, force MAE, relative-energy MAE, and
    the paper's values where SI Table S5 / the README has them."""
    rows = []
    for (system, method, init), g in frame[frame["role"] == "test"].groupby(
            ["system", "method", "init"], sort=False):
        e_mae, e_ci = pl.mean_ci95(np.abs(g["energy_error_kcal"]))
        f_mae, f_ci = pl.mean_ci95(g["force_mae_kcal_per_angstrom"])
        rel = relative[(relative["system"] == system) & (relative["method"] == method)
                       & (relative["init"] == init)]
        r_mae, r_ci = pl.mean_ci95(np.abs(rel["rel_error_kcal"]))
        target = str(g["target"].iloc[0])
        paper = PAPER_TABLE_S5.get((system, target, init), (np.nan, np.nan))
        paper_rel = (PAPER_RELATIVE.get(system, np.nan)
                     if target == "ts_res" and init == HEADLINE_INIT else np.nan)
        rows.append({"system": system, "method": method, "target": target, "init": init,
                     "n": len(g), "energy_mae_kcal": e_mae, "energy_mae_ci95": e_ci,
                     "paper_energy_mae_kcal": paper[0],
                     "force_mae_kcal_per_angstrom": f_mae, "force_mae_ci95": f_ci,
                     "paper_force_mae_kcal_per_angstrom": paper[1],
                     "rel_energy_mae_kcal": r_mae, "rel_energy_mae_ci95": r_ci,
                     "n_relative": len(rel), "paper_rel_energy_mae_kcal": paper_rel,
                     "median_chosen_step": float(g["chosen_step"].median()),
                     "mean_solve_wall_s": float(g["solve_wall_s"].mean())})
    return pd.DataFrame(rows)


def relative_errors(frame: pd.DataFrame, references: dict) -> pd.DataFrame:
    """Relative-energy errors of every system: against the equilibrium structure where the system
    has one (``references[system]``), else between all pairs of test isomers."""
    parts = []
    by = ["system", "method", "init"]
    for system, g in frame.groupby("system", sort=False):
        ref = references.get(system)
        if ref is not None:
            r = pl.relative_to_reference(g, ref, by=by)
            r["kind"] = "vs equilibrium"
            r["pair"] = r["file"]
        else:
            r = pl.isomer_pair_errors(g[g["role"] == "test"], by=by)
            r["kind"] = "isomer pairs"
            r["pair"] = r["file_i"] + " / " + r["file_j"]
        parts.append(r[by + ["kind", "pair", "rel_error_kcal"]])
    if not parts:
        return pd.DataFrame(columns=by + ["kind", "pair", "rel_error_kcal"])
    return pd.concat(parts, ignore_index=True)


def classical_gap(summary: pd.DataFrame) -> tuple[float, str]:
    """min over systems of (smallest classical relative-energy MAE) / M-OFDFT's (ts_res,
    ProjMINAO), and a note listing each system's ratio."""
    ratios = {}
    for system, g in summary.groupby("system", sort=False):
        ours = g[(g["target"] == "ts_res") & (g["init"] == HEADLINE_INIT)]["rel_energy_mae_kcal"]
        classical = g[g["target"] == "classical"]
        if ours.empty or classical.empty or not np.isfinite(ours.iloc[0]) or ours.iloc[0] <= 0:
            continue
        best = classical.loc[classical["rel_energy_mae_kcal"].idxmin()]
        if not np.isfinite(best["rel_energy_mae_kcal"]):
            continue
        ratios[system] = (best["rel_energy_mae_kcal"] / ours.iloc[0], best["method"])
    if not ratios:
        return float("nan"), ""
    note = "; ".join(f"{s}: best classical {m} / M-OFDFT = {r:.3g}" for s, (r, m) in ratios.items())
    return float(min(r for r, _ in ratios.values())), note


def make_claims(ctx, summary: pd.DataFrame, workloads: dict, gap: tuple[float, str]
                ) -> pd.DataFrame:
    """claims.csv rows for every claim this run measured (scale: reduced / different)."""
    hardware = describe_hardware()
    rows = []

    def add(claim_id, value, n, system, note=""):
        if value is None or not np.isfinite(value):
            return
        rows.append({"claim_id": claim_id, "value": float(value), "n": int(n),
                     "scale": SYSTEM_SCALE[system], "kind": "measured",
                     "workload": workloads[system], "hardware": hardware,
                     "preset": ctx.preset, "note": note})

    for r in summary.itertuples(index=False):
        ids = CLAIM_IDS.get((r.system, r.target, r.init))
        if ids:
            add(ids[0], r.energy_mae_kcal, r.n, r.system)
            add(ids[1], r.force_mae_kcal_per_angstrom, r.n, r.system)
        if r.target == "ts_res" and r.init == HEADLINE_INIT and r.system in RELATIVE_CLAIMS:
            kind = ("vs the equilibrium structure" if r.system == "ethanol"
                    else "all test isomer pairs")
            add(RELATIVE_CLAIMS[r.system], r.rel_energy_mae_kcal, r.n_relative, r.system,
                note=f"relative energies {kind}")
    value, note = gap
    if np.isfinite(value):
        systems = [s for s in SYSTEMS if s in note]
        rows.append({"claim_id": "classical_gap", "value": value,
                     "n": int(summary[summary["target"] == "classical"]["n_relative"].sum()),
                     "scale": "different" if "small_molecules" in systems else "reduced",
                     "kind": "measured", "workload": " + ".join(workloads[s] for s in systems),
                     "hardware": hardware, "preset": ctx.preset,
                     "note": f"smaller of the systems' ratios; {note}"})
    return claims_frame(rows)


def make_figure(summary: pd.DataFrame):
    """Fig. 2a analogue: relative-energy MAE and HF-force MAE per method, log axis, 95 % CI."""
    plt = apply_plot_style()
    head = summary[(summary["target"] == "classical")
                   | (summary["init"] == HEADLINE_INIT)]
    systems = list(dict.fromkeys(head["system"]))
    methods = list(dict.fromkeys(head["method"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    width = 0.8 / max(len(methods), 1)
    for ax, col, ci, label in ((axes[0], "rel_energy_mae_kcal", "rel_energy_mae_ci95",
                                "relative energy MAE (kcal/mol)"),
                               (axes[1], "force_mae_kcal_per_angstrom", "force_mae_ci95",
                                "HF force MAE (kcal/mol/Å)")):
        for i, method in enumerate(methods):
            vals, errs = [], []
            for system in systems:
                r = head[(head["system"] == system) & (head["method"] == method)]
                vals.append(float(r[col].iloc[0]) if len(r) else np.nan)
                errs.append(float(r[ci].iloc[0]) if len(r) else np.nan)
            x = np.arange(len(systems)) + (i - (len(methods) - 1) / 2) * width
            ax.bar(x, vals, width, yerr=np.nan_to_num(errs), capsize=2, label=method)
        ax.set_xticks(np.arange(len(systems)))
        ax.set_xticklabels([s.replace("_", " ") for s in systems])
        ax.set_yscale("log")
        ax.set_ylabel(label)
    axes[0].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[0].text(axes[0].get_xlim()[0], 1.05, " chemical accuracy", color="grey", fontsize=8)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("M-OFDFT (ProjMINAO) vs classical OFDFT (MINAO) — Fig. 2a analogue")
    return fig


def run(ctx):
    """Run the experiment at ``ctx.preset`` and write ``ctx.out_dir/accuracy_in_scale``."""
    t0, cpu0 = time.perf_counter(), pl.cpu_seconds()
    config = pl.load_experiment_config(EXPERIMENT, ctx.preset)
    steps, rule = int(config["steps"]), str(config.get("rule", "iid"))
    frames, references, workloads, fingerprints, models = [], {}, {}, {}, {}
    for system in SYSTEMS:
        if system not in config:
            continue
        scfg = config[system]
        targets = scfg.get("targets", config["targets"])
        data, files, reference, checkpoints = prepare_system(ctx, system, scfg, targets)
        extra = [reference] if reference and reference not in files else []
        learned_runs, classical_runs = system_runs(config, scfg, checkpoints)
        n_classical = int(scfg.get("classical_max_eval", len(files)))
        classical_files = frozenset(files[:n_classical] + extra)
        runs = learned_runs + [dataclasses.replace(r, files=classical_files)
                               for r in classical_runs]
        # one pass over the molecules: learned and classical runs share each molecule's integrals
        frame = pl.evaluate(data, files + extra, runs, steps=steps, rule=rule,
                            cache_dir=ctx.preset_cache, refresh=ctx.force,
                            progress=ctx.progress).frame
        frame.insert(0, "system", system)
        frame.insert(1, "role", np.where(frame["file"].isin(files), "test", "reference"))
        if scfg.get("relative_to_reference") and reference is None and len(frame):
            # no equilibrium structure in the data (MD17): the lowest-KS-energy test structure
            reference = str(frame.loc[frame["energy_ks_ha"].idxmin(), "file"])
        frames.append(frame)
        references[system] = reference
        workloads[system] = pl.describe_workload(data, len(files), steps=steps) + "; models: " + \
            ", ".join(f"{t}: {describe_model(ck)}" for t, ck in checkpoints.items())
        fingerprints[f"{system}_dataset"] = data.fingerprint
        for t, ck in checkpoints.items():
            fingerprints[f"{system}_{t}_weights"] = ck.weights_sha256
            models[f"{system}_{t}"] = {"checkpoint": str(ck.stem), "shipped": ck.shipped,
                                       "train": {k: ck.summary.get(k) for k in
                                                 ("config", "epochs", "best_epoch",
                                                  "n_train_molecules", "train_wall_s")}}
    frame = pd.concat(frames, ignore_index=True)
    relative = relative_errors(frame, references)
    summary = summarise(frame, relative)
    gap = classical_gap(summary)
    claims = make_claims(ctx, summary, workloads, gap)
    intro = _intro(ctx, config, summary, workloads, gap)
    figures = {"fig2a": make_figure(summary)} if len(summary) else {}
    path = pl.finish_experiment(ctx, EXPERIMENT, config, t0=t0, cpu0=cpu0,
                                table=frame, claims=claims,
                                data_fingerprints=fingerprints, intro=intro, figures=figures,
                                extra_info={"models": models})
    summary.to_csv(path / "summary.csv", index=False)
    relative.to_csv(path / "relative.csv", index=False)
    return path


def describe_model(ck) -> str:
    """One phrase naming a checkpoint and how it was trained (for the workload column)."""
    s = ck.summary
    how = (f"{s.get('config')} config, {s.get('n_train_molecules')} training molecules, "
           f"{s.get('epochs')} epochs")
    if ck.shipped:
        return f"shipped checkpoint {ck.stem.name} ({how})"
    if "train_config" not in s:  # a checkpoint given by path
        return f"checkpoint {ck.stem} ({how})"
    return f"trained here ({how})"


def _intro(ctx, config, summary, workloads, gap) -> str:
    lines = [
        "In-scale accuracy (spec §5.2, SI Table S5, Fig. 2a). Energies against the KS total "
        "energy of the labels, HF forces against those of the fitted KS density p*; "
        f"{config['steps']} projected-gradient steps, reported step by the "
        f"{config.get('rule', 'iid').upper()} rule. Classical functionals start from "
        f"{config.get('classical_init', 'minao').upper()} with PBE XC.",
        "",
        "Workloads (our stand-ins for the paper's sets):",
        "",
    ]
    lines += [f"* **{s}** — {w}" for s, w in workloads.items()]
    lines += ["", "## Summary (paper values: SI Table S5 and the release README)", "",
              markdown_table(summary[["system", "method", "init", "n", "energy_mae_kcal",
                                      "paper_energy_mae_kcal", "force_mae_kcal_per_angstrom",
                                      "paper_force_mae_kcal_per_angstrom", "rel_energy_mae_kcal",
                                      "n_relative", "paper_rel_energy_mae_kcal",
                                      "median_chosen_step"]]), ""]
    if np.isfinite(gap[0]):
        lines += [f"Classical / M-OFDFT relative-energy MAE ratio: **{gap[0]:.3g}** ({gap[1]}); "
                  "the paper claims at least 100 (\"two orders of magnitude\").", ""]
    return "\n".join(lines)
