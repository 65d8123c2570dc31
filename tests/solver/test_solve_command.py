"""``mofdft solve``: JSON contract, trajectory CSV, cube file, KS-density evaluation, bad input."""

import csv
import json

import numpy as np
import pytest

from mofdft_jax.cli import main
from mofdft_jax.qchem.cube import read_cube

WATER_XYZ = """3
water
O 0.0 0.0 0.1173
H 0.0 0.7572 -0.4692
H 0.0 -0.7572 -0.4692
"""

REQUIRED_KEYS = {"energy_total_ha", "terms", "forces_ha_per_bohr", "n_steps", "chosen_step",
                 "status", "wall_s", "converged_step", "proj_grad_norm", "n_electrons",
                 "electron_count", "message", "functional", "init"}


@pytest.fixture(scope="module")
def water_xyz(tmp_path_factory):
    path = tmp_path_factory.mktemp("solve") / "water.xyz"
    path.write_text(WATER_XYZ)
    return path


def run_json(capsys, args):
    code = main(args)
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_solve_json_trajectory_and_cube(water_xyz, tmp_path, capsys):
    traj, cube = tmp_path / "traj.csv", tmp_path / "rho.cube"
    code, data = run_json(capsys, ["solve", str(water_xyz), "--functional", "tf", "--init",
                                   "minao", "--steps", "5", "--grid-level", "0", "--basis",
                                   "sto-3g", "--json", "--trajectory", str(traj), "--cube",
                                   str(cube)])
    assert code == 0
    assert REQUIRED_KEYS <= set(data)
    assert data["status"] in ("converged", "max-steps")
    assert data["n_steps"] == 5 and 0 <= data["chosen_step"] <= 5
    assert set(data["terms"]) == {"kinetic", "hartree", "xc", "external", "nuclear"}
    assert data["energy_total_ha"] == pytest.approx(sum(data["terms"].values()), abs=1e-10)
    assert np.isfinite(data["energy_total_ha"])
    assert abs(data["electron_count"] - 10.0) < 1e-10 and data["n_electrons"] == 10
    assert np.asarray(data["forces_ha_per_bohr"]).shape == (3, 3)
    # water is symmetric in the molecular plane x = 0: no x force
    assert np.abs(np.asarray(data["forces_ha_per_bohr"])[:, 0]).max() < 1e-8

    rows = list(csv.DictReader(traj.open()))
    assert len(rows) == 6 and rows[0]["delta_energy_ha"] == ""
    for before, after in zip(rows, rows[1:]):  # signed: E_k - E_(k-1)
        assert float(after["delta_energy_ha"]) == pytest.approx(
            float(after["energy_ha"]) - float(before["energy_ha"]), abs=1e-14)
    assert float(rows[data["chosen_step"]]["energy_ha"]) == pytest.approx(data["energy_total_ha"],
                                                                         abs=1e-12)
    assert {"kinetic_ha", "proj_grad_norm", "n_electrons"} <= set(rows[0])
    density = read_cube(cube)
    assert density.field.shape == (80, 80, 80)
    assert abs(density.integrate() - 10.0) < 0.2


def test_zero_steps_at_ks_density_reproduces_ks_terms(water_xyz, capsys):
    """``--steps 0 --init ks`` evaluates the functional at the fitted KS density: the Hartree, XC
    and external terms agree with PySCF's KS values within the fitting error (measured for
    water, PBE/6-31G, grid level 1: ΔE_H = −0.35 mHa, ΔE_xc = −0.27 mHa, ΔE_ext = +0.31 mHa, sum
    −0.31 mHa; with 6-31G(2df,p) +1.8 / −0.4 / −1.8 mHa — the density fit plus the
    charge-constrained renormalisation, see qchem/guesses.py)."""
    code, data = run_json(capsys, ["solve", str(water_xyz), "--functional", "apbe", "--init",
                                   "ks", "--steps", "0", "--grid-level", "1", "--basis", "6-31G",
                                   "--json"])
    assert code == 0
    ref, terms = data["ks_reference"], data["terms"]
    assert ref["converged"] and data["n_steps"] == 0 and data["chosen_step"] == 0
    diffs = {k: terms[k] - ref[k] for k in ("hartree", "xc", "external")}
    print("OFDFT terms at the KS density minus KS (Ha):", diffs)
    for name, diff in diffs.items():
        assert abs(diff) < 2e-3, name
    assert abs(sum(diffs.values())) < 1e-3
    assert terms["nuclear"] == pytest.approx(ref["e_nuc"], abs=1e-10)
    # the only term that differs for real is the kinetic one: APBE vs the exact T_S
    assert abs(data["energy_total_ha"] - terms["kinetic"]
               - (ref["e_tot"] - ref["kinetic"])) < 1e-3


def test_bad_options_and_input(water_xyz, tmp_path, capsys):
    assert main(["solve", str(water_xyz), "--functional", "tf+2vw"]) == 2
    assert "tf+2vw" in capsys.readouterr().err
    assert main(["solve", str(water_xyz), "--init", "sad"]) == 2
    assert main(["solve", str(tmp_path / "missing.xyz")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "missing.xyz" in err


def test_solve_diverged_exits_nonzero_with_the_message(water_xyz, capsys):
    """A step far too large diverges: status ``diverged``, the solver's message, exit code 1."""
    code, data = run_json(capsys, ["solve", str(water_xyz), "--functional", "tf", "--init",
                                   "minao", "--steps", "50", "--lr", "1e3", "--grid-level", "0",
                                   "--basis", "sto-3g", "--json"])
    assert data["status"] == "diverged" and data["message"]
    assert code == 1


def test_grid_dtype_float32_option(water_xyz, capsys):
    """``--grid-dtype float32``: the same 20-step APBE solve as float64 to 1e-5 Ha (measured
    2.0e-6 Ha of 75 Ha), the electron
    count still exact to 1e-10, the option reported in the JSON; other values refused."""
    args = ["solve", str(water_xyz), "--functional", "apbe", "--init", "minao", "--steps", "20",
            "--grid-level", "0", "--basis", "sto-3g", "--json"]
    code64, d64 = run_json(capsys, args)
    code32, d32 = run_json(capsys, args + ["--grid-dtype", "float32"])
    assert code64 == code32 == 0
    assert d64["grid_dtype"] == "float64" and d32["grid_dtype"] == "float32"
    diff = d32["energy_final_ha"] - d64["energy_final_ha"]
    print(f"water APBE+PBE 20 steps, float32 - float64 grid values: {diff:.2e} Ha")
    assert diff != 0.0 and abs(diff) < 1e-5
    assert abs(d32["electron_count"] - 10.0) < 1e-10
    assert main(args + ["--grid-dtype", "float16"]) == 2
    assert "float16" in capsys.readouterr().err


def test_solve_optimizer_stops_at_gtol_and_records_it(water_xyz, capsys):
    """``--optimizer precond-lbfgs --gtol 1e-5 --max-steps 300`` (APBE+PBE, grid level 1):
    stops at the first converged state (measured: 24 steps), reports it (rule ``last``) and
    records optimiser, metric, steps to convergence and evaluations; the paper's default
    (``sgd``, ``--steps``) still runs every step."""
    common = ["solve", str(water_xyz), "--functional", "apbe", "--init", "minao",
              "--basis", "sto-3g", "--json"]
    code, fast = run_json(capsys, common + ["--grid-level", "1", "--optimizer", "precond-lbfgs",
                                            "--gtol", "1e-5", "--max-steps", "300"])
    assert code == 0, fast["message"]
    assert fast["optimizer"] == "precond-lbfgs" and fast["metric"] == "overlap+coulomb"
    assert fast["status"] == "converged" and fast["stop_at_gtol"] is True
    assert fast["rule"] == "last" and fast["max_steps"] == 300
    assert fast["n_steps"] == fast["steps_to_convergence"] == fast["chosen_step"] < 60
    assert fast["proj_grad_norm"] < 1e-5
    assert fast["n_evaluations"] > fast["n_steps"]
    assert fast["negative_density"] == 0.0 and fast["warnings"] == []
    assert abs(fast["electron_count"] - 10.0) < 1e-10
    # the minimum of tests/solver/test_optimizers.py (same density basis and grid)
    assert fast["energy_total_ha"] == pytest.approx(-85.0065981038, abs=1e-6)

    code, paper = run_json(capsys, common + ["--grid-level", "0", "--steps", "30"])
    assert code == 0
    assert paper["optimizer"] == "sgd" and paper["rule"] == "iid" and paper["lr"] == 1e-3
    assert paper["stop_at_gtol"] is False and paper["n_steps"] == 30


def test_coarse_grid_minimum_exploits_negative_density_and_is_flagged(water_xyz, capsys):
    """On grid level 0 (2322 points) the masked functionals let the optimiser put density holes
    between the points: APBE+PBE "converges" at −1268 Ha with 0.7 electrons of negative density
    (measured); the JSON carries the integrated negative density and the warning."""
    code, data = run_json(capsys, ["solve", str(water_xyz), "--functional", "apbe", "--init",
                                   "minao", "--basis", "sto-3g", "--grid-level", "0",
                                   "--optimizer", "precond-lbfgs", "--max-steps", "400",
                                   "--json"])
    assert code == 0
    assert data["negative_density"] > 0.1 and data["warnings"] == ["negative-density"]
    assert data["energy_total_ha"] < -1000.0


def test_solve_bad_optimizer_is_refused(water_xyz, capsys):
    assert main(["solve", str(water_xyz), "--optimizer", "newton"]) == 2
    err = capsys.readouterr().err
    assert "newton" in err and "lbfgs" in err
