"""Time to a converged density (issue 17): not the paper's 1000 fixed steps, but the steps and
seconds until |P∇E| ≤ 1e-4, with the preconditioned L-BFGS optimiser.

1. Ethanol, APBE + PBE at the paper's settings (6-31G(2df,p) MINAO start, grid level 2): target
   ≤ 60 steps and ≤ 5 s of solve time on the 2-core CPU; judged as the ratio to the fixed reference
   computation of ``conftest.py``.
2. Ethanol with the shipped learned functional (``ethanol_ts_res``, at its own label settings:
   6-31G, grid level 1; ProjMINAO start): target ≤ 10 s of solve time (≥ 3× faster than the
   paper's 29.7 s A100 figure for 1000 steps). The minimum it converges to is the spurious one of
   issue 19 (tens of kcal/mol below KS); this times the solver, not the functional's accuracy.
3. APBE + PBE at the paper's grid for C5H12, C10H22 and C20H42, each ``mofdft solve`` in its own
   process (its peak resident memory from ``os.wait4``): converged, peak ≤ 12 GiB each (target),
   solve time against the electron count fitted as t ∝ N_e^k (target k ≤ 1.3). The grid's basis
   values are stored in float32 (``--grid-dtype float32``, the explicit option): in float64,
   C20H42 needs ~24 GiB by the up-front estimate and is refused on a 24 GiB machine.

Run: ``pytest -m benchmark -s tests/benchmarks/test_bench_convergence.py``. The assertions are
regression guards with margin over the measurement (constants below); the targets are reported in
``extra_info`` and printed.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from mofdft_jax.molecules.io import read_molecules
from mofdft_jax.qchem.basis import make_auxmol, make_mol
from mofdft_jax.qchem.guesses import minao_guess
from mofdft_jax.qchem.integrals import build_integral_bundle
from mofdft_jax.qchem.settings import PAPER_SETTINGS
from mofdft_jax.solver import make_energy_fn, solve

TARGET_ETHANOL_STEPS = 60
TARGET_ETHANOL_S = 5.0
TARGET_LEARNED_S = 10.0
TARGET_PEAK_GIB = 12.0
TARGET_EXPONENT = 1.3
#: Regression guards, with margin over the measurement of 2026-12-03 (idle 2-core CPU):
#: ethanol converged at step 27 (56 evaluations) in 6.3 s and 4.3 s in two runs (ratio 58.5 and
#: 43.9; the 5 s target met in one of them); C5H12 / C10H22 / C20H42 converged in 22 / 26 / 25 steps, solve 8.6 / 16.9 / 22.6 s
#: (setup 8.8 / 23.7 / 67.8 s), peak 2.01 / 4.53 / 11.45 GiB, solve time ∝ N_e^0.71.
#: Learned ethanol: converged at step 80 (169 evaluations), solve 8.8 s and 11.7 s in two runs.
MAX_ETHANOL_STEPS = 60
MAX_RATIO_ETHANOL = 120.0
MAX_LEARNED_STEPS = 200
MAX_RATIO_LEARNED = 300.0
MAX_PEAK_GIB = 16.0
MAX_EXPONENT = 1.3
ALKANES = [("C5H12", "C" * 5), ("C10H22", "C" * 10), ("C20H42", "C" * 20)]


@pytest.mark.benchmark
def test_ethanol_apbe_time_to_convergence(benchmark, reference_s, record_ratio):
    molecule = read_molecules("smiles:CCO")[0]
    mol = make_mol(molecule, PAPER_SETTINGS.basis)
    auxmol = make_auxmol(mol)
    bundle = build_integral_bundle(mol, auxmol, grid_level=2, with_forces=False,
                                   with_overlap=True)
    p0 = minao_guess(mol, auxmol).coeffs
    terms_fn, _ = make_energy_fn("apbe", xc="pbe")
    solve(terms_fn, p0, bundle, steps=3, optimizer="precond-lbfgs")  # compile
    out = {}

    def run():
        t0 = time.perf_counter()
        out["result"] = solve(terms_fn, p0, bundle, steps=300, gtol=1e-4,
                              optimizer="precond-lbfgs")
        out["seconds"] = time.perf_counter() - t0

    benchmark.pedantic(run, rounds=1, iterations=1)
    result, seconds = out["result"], out["seconds"]
    ratio = record_ratio(benchmark, seconds, reference_s)
    steps = result.converged_step
    print(f"\nethanol APBE+PBE precond-lbfgs: {result.status} at step {steps} "
          f"({result.n_evaluations} evaluations), {seconds:.1f} s (target ≤ "
          f"{TARGET_ETHANOL_STEPS} steps, ≤ {TARGET_ETHANOL_S} s); ratio {ratio:.1f}")
    benchmark.extra_info.update({"steps": steps, "seconds": seconds,
                                 "n_evaluations": result.n_evaluations,
                                 "target_steps": TARGET_ETHANOL_STEPS,
                                 "target_s": TARGET_ETHANOL_S,
                                 "meets_target": bool(steps is not None
                                                      and steps <= TARGET_ETHANOL_STEPS
                                                      and seconds <= TARGET_ETHANOL_S)})
    assert result.status == "converged" and steps <= MAX_ETHANOL_STEPS
    assert ratio <= MAX_RATIO_ETHANOL


@pytest.mark.benchmark
def test_learned_ethanol_time_to_convergence(benchmark, reference_s, record_ratio):
    from pathlib import Path

    import mofdft_jax
    from mofdft_jax.commands.learned_solve import (load_functional, prepare_learned_molecule,
                                                   solve_molecule_learned, solver_defaults)

    checkpoint = Path(mofdft_jax.__file__).parent / "checkpoints" / "ethanol_ts_res"
    functional, info = load_functional(checkpoint)
    defaults = solver_defaults(info)
    molecule = read_molecules("smiles:CCO")[0]
    setup = prepare_learned_molecule(molecule, functional, basis=defaults["basis"],
                                     grid_level=defaults["grid_level"], xc=defaults["xc"],
                                     with_metric=True)
    options = dict(optimizer="precond-lbfgs", rule="last", gtol=1e-4, setup=setup)
    solve_molecule_learned(molecule, functional, info, steps=3, **options)  # compile
    out = {}

    def run():
        out["summary"], out["result"] = solve_molecule_learned(molecule, functional, info,
                                                               steps=300, **options)

    benchmark.pedantic(run, rounds=1, iterations=1)
    summary = out["summary"]
    seconds = summary["solve_wall_s"]
    ratio = record_ratio(benchmark, seconds, reference_s)
    steps = summary["converged_step"]
    print(f"\nethanol learned (ethanol_ts_res) precond-lbfgs: {summary['status']} at step {steps}, "
          f"solve {seconds:.1f} s (target ≤ {TARGET_LEARNED_S} s); ratio {ratio:.1f}")
    benchmark.extra_info.update({"steps": steps, "target_s": TARGET_LEARNED_S,
                                 "meets_target": bool(steps is not None
                                                      and seconds <= TARGET_LEARNED_S)})
    assert summary["status"] == "converged" and steps <= MAX_LEARNED_STEPS
    assert ratio <= MAX_RATIO_LEARNED


def _solve_in_a_process(smiles: str) -> tuple[dict, float]:
    """``mofdft solve smiles:SMILES`` (APBE+PBE, paper grid, float32 grid values,
    precond-lbfgs): its JSON summary and its peak resident memory in GiB."""
    cmd = [sys.executable, "-m", "mofdft_jax.cli", "solve", f"smiles:{smiles}", "--functional",
           "apbe", "--optimizer", "precond-lbfgs", "--max-steps", "300", "--grid-dtype",
           "float32", "--json"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        stdout = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        assert proc.returncode == 0, err.read().decode()[-2000:]
    return json.loads(stdout), usage.ru_maxrss / 2**20  # kB -> GiB


@pytest.mark.benchmark
def test_alkanes_apbe_to_convergence_memory_and_scaling(benchmark):
    rows = []

    def run_all():
        rows.clear()
        for name, smiles in ALKANES:
            summary, peak_gib = _solve_in_a_process(smiles)
            rows.append({"molecule": name, "n_electrons": summary["n_electrons"],
                         "n_atoms": summary["n_atoms"], "naux": summary["naux"],
                         "status": summary["status"], "steps": summary["converged_step"],
                         "solve_s": summary["solve_wall_s"], "setup_s": summary["setup_wall_s"],
                         "peak_gib": peak_gib})

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    ne = np.array([r["n_electrons"] for r in rows], dtype=float)
    exponent = float(np.polyfit(np.log(ne), np.log([r["solve_s"] for r in rows]), 1)[0])
    per_step = float(np.polyfit(np.log(ne), np.log([r["solve_s"] / r["steps"] for r in rows]),
                                1)[0])
    for r in rows:
        print(f"\n{r['molecule']:7s} {r['n_electrons']:5.0f} e naux {r['naux']:5d}: {r['status']} "
              f"in {r['steps']} steps, solve {r['solve_s']:.1f} s (setup {r['setup_s']:.1f} s), "
              f"peak {r['peak_gib']:.2f} GiB", end="")
    print(f"\nsolve time ∝ N_e^{exponent:.2f} (per step {per_step:.2f}; target ≤ "
          f"{TARGET_EXPONENT}), peak ≤ {max(r['peak_gib'] for r in rows):.2f} GiB (target ≤ "
          f"{TARGET_PEAK_GIB})")
    benchmark.extra_info.update({
        "rows": rows, "exponent": exponent, "exponent_per_step": per_step,
        "target_exponent": TARGET_EXPONENT, "target_peak_gib": TARGET_PEAK_GIB,
        "meets_target": bool(exponent <= TARGET_EXPONENT
                             and all(r["peak_gib"] <= TARGET_PEAK_GIB for r in rows))})
    assert all(r["status"] == "converged" for r in rows)
    assert all(r["peak_gib"] <= MAX_PEAK_GIB for r in rows)
    assert exponent <= MAX_EXPONENT
