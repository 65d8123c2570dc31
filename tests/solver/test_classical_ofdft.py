"""Classical OFDFT baselines (spec §4.3–§4.5, §5.2 Fig. 2a): TF, TF+1/9vW, TF+vW and APBE kinetic
functionals with PBE XC, MINAO start, 1000 projected-gradient steps of 1e-3, the IID reporting rule,
against PBE KS-DFT with the same orbital basis (6-31G(2df,p)) and grid.

The paper's qualitative result: classical kinetic functionals miss the KS energy by hundreds to
thousands of kcal/mol (its Fig. 2a axis breaks at 40 and resumes at 10³–10⁴ kcal/mol; the
per-functional numbers are not in the text, spec §5.2). These runs regenerate those baseline rows.

Measured on this machine, E_OFDFT − E_KS in kcal/mol at the IID step (always step 1000: the energy
still falls monotonically); every run ends ``max-steps`` with ‖P∇E‖ of 0.8–2.7 (the paper's
fixed 1000-step protocol reports the chosen step whether or not it converged). Water at grid level 1 is the default
test (TF+1/9vW and APBE rows); level 2 is the slow test (E_KS: water −76.334 Ha, ethanol
−154.844 Ha; PBE/6-31G(2df,p)):

==========  ==========  ==========  ============  ==================
functional  water L1    water L2    ethanol L2    ‖P∇E‖ (eth. L2)
==========  ==========  ==========  ============  ==================
TF          −11 697     −11 697     −25 773       2.72
TF+1/9vW     −4 491      −4 490      −9 791       1.58
TF+vW       +16 555     +16 555     +33 904       0.99
APBE         −4 308      −4 306      −9 627       1.84
==========  ==========  ==========  ============  ==================

These are the classical baseline rows of the accuracy table (spec §5.2: the paper shows them only on
a broken axis, 10³–10⁴ kcal/mol, for relative energies).
"""

import time

import numpy as np
import pytest

from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem.basis import make_auxmol, make_mol
from mofdft_jax.qchem.guesses import ks_guess, minao_guess
from mofdft_jax.qchem.integrals import build_integral_bundle
from mofdft_jax.qchem.settings import PAPER_SETTINGS
from mofdft_jax.solver import STATUS_DIVERGED, make_energy_fn, solve
from mofdft_jax.units import HARTREE_TO_KCAL

KINETIC = ("tf", "tf+1/9vw", "tf+vw", "apbe")
WATER = ([8, 1, 1], [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])
# RDKit ETKDG (seed 0) + MMFF geometry of ethanol, Angstrom
ETHANOL = ([6, 6, 8, 1, 1, 1, 1, 1, 1],
           [[0.9011, -0.0750, 0.0144], [-0.5844, -0.3678, 0.0562], [-1.3058, 0.8221, 0.3398],
            [1.2367, 0.3507, 0.9658], [1.1285, 0.6626, -0.7623], [1.4724, -0.9854, -0.1868],
            [-0.8088, -1.0977, 0.8394], [-0.9322, -0.7699, -0.9002], [-1.1074, 1.4606, -0.3663]])


def run_baselines(name, numbers, coords_angstrom, *, grid_level, kinetic=KINETIC, steps=1000,
                  lr=1e-3):
    """One row per kinetic functional: OFDFT energy at the IID step and its error vs KS."""
    mol = make_mol(Molecule.from_angstrom(numbers, coords_angstrom, name=name))
    auxmol = make_auxmol(mol)
    bundle = build_integral_bundle(mol, auxmol, grid_level=grid_level, with_forces=False,
                                   with_overlap=False)
    e_ks = ks_guess(mol, auxmol, settings=PAPER_SETTINGS.replace(grid_level=grid_level)
                    ).reference["e_tot"]
    p0 = minao_guess(mol, auxmol).coeffs
    rows = []
    for functional in kinetic:
        terms_fn, _ = make_energy_fn(functional, xc="pbe")
        t0 = time.perf_counter()
        res = solve(terms_fn, p0, bundle, steps=steps, lr=lr, rule="iid")
        rows.append({"molecule": name, "functional": functional, "grid_level": grid_level,
                     "energy_ha": res.energy, "e_ks_ha": e_ks,
                     "error_kcal": (res.energy - e_ks) * HARTREE_TO_KCAL,
                     "status": res.status, "chosen_step": res.chosen_step,
                     "proj_grad_norm": res.proj_grad_norm,
                     "count_drift": float(np.abs(res.trajectory.n_electrons
                                                 - mol.nelectron).max()),
                     "wall_s": time.perf_counter() - t0})
    print(f"\n{name}: E_KS = {e_ks:.6f} Ha (PBE/6-31G(2df,p), grid level {grid_level})")
    for r in rows:
        print(f"  {r['functional']:9s} E = {r['energy_ha']:.6f} Ha  error = "
              f"{r['error_kcal']:+10.1f} kcal/mol  {r['status']} (step {r['chosen_step']}, "
              f"|Pg| = {r['proj_grad_norm']:.2f})  {r['wall_s']:.1f} s")
    return rows


def check_rows(rows):
    for r in rows:
        assert r["status"] != STATUS_DIVERGED, r
        assert np.isfinite(r["energy_ha"]), r
        assert r["count_drift"] < 1e-10, r
        # hundreds to thousands of kcal/mol (TF+vW overshoots to ~10⁴)
        assert 100.0 < abs(r["error_kcal"]) < 50_000.0, r


def test_classical_ofdft_water():
    """Default (fast) run: the two functionals the paper leans on (TF+1/9vW for its density
    comparisons, APBE as the base of its residual functional), grid level 1 (~30 s CPU each)."""
    rows = run_baselines("water", *WATER, grid_level=1, kinetic=("tf+1/9vw", "apbe"))
    check_rows(rows)
    by = {r["functional"]: r["error_kcal"] for r in rows}
    assert by["tf+1/9vw"] < -1000 and by["apbe"] < -1000  # both overbind by thousands


@pytest.mark.slow
@pytest.mark.parametrize("case", ["water", "ethanol"])
def test_classical_ofdft_paper_grid(case):
    numbers, coords = {"water": WATER, "ethanol": ETHANOL}[case]
    rows = run_baselines(case, numbers, coords, grid_level=2)
    check_rows(rows)
    by = {r["functional"]: r["error_kcal"] for r in rows}
    # TF overbinds most, the vW-corrected and APBE functionals less, full vW underbinds
    assert by["tf"] < by["tf+1/9vw"] < 0 < by["tf+vw"]
    assert by["apbe"] < 0
