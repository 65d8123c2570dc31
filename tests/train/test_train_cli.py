"""``mofdft train`` and ``mofdft solve --functional CHECKPOINT`` end to end on a tiny dataset:
JSON contract, resume, refusal of a mismatched config, ablation flags, ProjMINAO, the three
targets in the solver, unseen elements."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TRAIN

from mofdft_jax.cli import main
from mofdft_jax.model.checkpoint import load_checkpoint

WATER_XYZ = "3\nwater\nO 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"
AMMONIA_XYZ = ("4\nammonia\nN 0.0 0.0 0.1162\nH 0.0 0.9397 -0.2711\nH 0.8138 -0.4699 -0.2711\n"
               "H -0.8138 -0.4699 -0.2711\n")


def run_json(capsys, args):
    code = main(args)
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


@pytest.fixture(scope="module")
def water_xyz(tmp_path_factory):
    path = tmp_path_factory.mktemp("mols") / "water.xyz"
    path.write_text(WATER_XYZ)
    return path


def test_train_json_resume_and_mismatch(trained, tiny_dataset, capsys):
    functional, info = load_checkpoint(trained)
    assert functional.target == "ts_res" and functional.config.num_layers == 2
    assert info.extra["solver_defaults"] == {"basis": "sto-3g", "grid_level": 0, "xc": "pbe",
                                             "lr": 1e-3}
    assert info.extra["train_config"]["weights"] == {"energy": 1.0, "grad": 0.1, "delta": 0.08,
                                                     "hvp": 0.0, "curv": 0.0, "bound": 0.0}
    assert len(info.data_fingerprint) == 64
    # rerunning the finished command resumes at its end: no new step, same summary
    code, data, _ = run_json(capsys, ["train", "--data", str(tiny_dataset), "--out",
                                      str(trained), "--epochs", "2", "--json", *TRAIN])
    assert code == 0
    assert data["resumed_from_epoch"] == 2 and data["epochs"] == 2
    assert data["data_fingerprint"] == info.data_fingerprint
    assert data["schema"] == "mofdft.train/1"
    assert {"best", "n_train_steps", "checkpoint", "train_config"} <= set(data)
    # --json is a summary: the per-epoch history stays in the train state it names
    assert "history" not in data and data["n_history_rows"] == 2
    history = json.loads(Path(data["history_file"]).read_text())["history"]
    assert history[-1]["epoch"] == 2 and "train_energy_mae_kcal" in history[-1]
    assert data["best"]["epoch"] == data["best_epoch"]
    # the same --out with another model config is refused with one clear line (exit status 2)
    code, _, err = run_json(capsys, ["train", "--data", str(tiny_dataset), "--out", str(trained),
                                     "--epochs", "2", "--config", "small",
                                     "--allow-unseen-elements"])
    assert code == 2 and "cannot resume" in err and "num_layers" in err


def test_ablation_flags_reach_the_checkpoint(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "ablation"
    code, data, _ = run_json(capsys, ["train", "--data", str(tiny_dataset), "--out", str(out),
                                      "--epochs", "1", "--json", "--no-grad-labels",
                                      "--ground-state-only", "--no-local-frames",
                                      "--no-reparam", *TRAIN])
    assert code == 0
    assert data["train_config"]["weights"]["grad"] == 0.0
    assert data["ablations"] == {"no_grad_labels": True, "ground_state_only": True,
                                 "no_local_frames": True, "no_reparam": True}
    assert data["n_train_steps"] == data["n_train_molecules"]  # one (converged) step each
    functional, _ = load_checkpoint(out)
    assert not functional.use_local_frames and not functional.use_reparam


def test_solve_with_learned_functional_and_projminao(trained, water_xyz, capsys):
    """The solver runs with the learned ts_res functional (T_θ + T_APBE + PBE + Hartree + external
    + E_nn); ProjMINAO moves the MINAO start by the Δp head and keeps the electron count."""
    base = ["solve", str(water_xyz), "--functional", str(trained), "--steps", "3", "--json"]
    code, minao, _ = run_json(capsys, base + ["--init", "minao"])
    assert code == 0
    code, proj, _ = run_json(capsys, base + ["--init", "projminao"])
    assert code == 0
    assert proj["target"] == "ts_res" and proj["basis"] == "sto-3g" and proj["grid_level"] == 0
    assert proj["lr"] == 1e-3
    assert set(proj["terms"]) == {"kinetic", "hartree", "xc", "external", "nuclear"}
    assert proj["energy_total_ha"] == pytest.approx(sum(proj["terms"].values()), abs=1e-10)
    assert abs(proj["energy_initial_ha"] - minao["energy_initial_ha"]) > 1e-6
    assert proj["electron_count"] == pytest.approx(10.0, abs=1e-10)
    assert np.isfinite(np.asarray(proj["forces_ha_per_bohr"])).all()


def test_projminao_delta_conserves_charge_and_targets(trained, water_xyz):
    """Δp is back-transformed to raw coefficients with wᵀΔp = 0; the txc and tot functionals add
    only the grid-free terms (spec §3.4)."""
    from mofdft_jax.molecules.io import read_molecules
    from mofdft_jax.qchem.basis import make_auxmol, make_mol
    from mofdft_jax.qchem.guesses import initial_guess
    from mofdft_jax.qchem.integrals import build_integral_bundle
    from mofdft_jax.solver.learned import make_learned_energy_fn, make_learned_inputs

    functional, _ = load_checkpoint(trained)
    mol = make_mol(read_molecules(str(water_xyz))[0], "sto-3g")
    auxmol = make_auxmol(mol)
    bundle = build_integral_bundle(mol, auxmol, grid_level=0, with_forces=False)
    geometry = functional.prepare(bundle)
    minao = initial_guess("minao", mol, auxmol)
    proj = initial_guess("projminao", mol, auxmol, functional=functional, bundle=bundle,
                         geometry=geometry)
    delta = proj.coeffs - minao.coeffs
    assert np.linalg.norm(delta) > 1e-4
    assert abs(float(np.asarray(bundle.norm) @ delta)) < 1e-10
    p = jnp.asarray(minao.coeffs)
    inputs = make_learned_inputs(functional, bundle, geometry)
    model = float(functional.energy(p, bundle, geometry))
    terms = make_learned_energy_fn(functional)(p, inputs)
    from mofdft_jax.functionals import apbe_energy, external_energy, hartree_energy

    assert float(terms["kinetic"]) == pytest.approx(model + float(apbe_energy(p, bundle)),
                                                    abs=1e-10)
    for target, keys in (("txc", {"kinetic_xc", "hartree", "external", "nuclear"}),
                         ("tot", {"total"})):
        other = type(functional)(model=functional.model, statistics=functional.statistics,
                                 target=target)
        other_inputs = make_learned_inputs(other, bundle._replace(grid=None), geometry)
        t = make_learned_energy_fn(other)(p, other_inputs)
        assert set(t) == keys
        if target == "txc":
            assert float(t["hartree"]) == pytest.approx(float(hartree_energy(p, bundle)))
            assert float(t["external"]) == pytest.approx(float(external_energy(p, bundle)))
        else:
            assert float(t["total"]) == pytest.approx(model, abs=1e-12)


def test_unseen_element_and_projminao_without_checkpoint(trained, tmp_path, water_xyz, capsys):
    ammonia = tmp_path / "ammonia.xyz"
    ammonia.write_text(AMMONIA_XYZ)
    code, _, err = run_json(capsys, ["solve", str(ammonia), "--functional", str(trained),
                                     "--steps", "1"])
    assert code == 2 and "error:" in err and "N never appeared" in err
    code, _, err = run_json(capsys, ["solve", str(water_xyz), "--functional", "apbe", "--init",
                                     "projminao", "--steps", "1"])
    assert code == 2 and "projminao" in err


@pytest.mark.slow  # ~1 min on 2 cores; tests/workflows covers the functions by default
def test_diagnose_reports_slope_curvature_and_end_point(trained, tiny_dataset, capsys):
    code, out, err = run_json(capsys, ["diagnose", str(trained), "--data", str(tiny_dataset),
                                       "--split", "train", "--n", "1", "--steps", "20",
                                       "--optimizer", "precond-lbfgs", "--json"])
    assert code == 0, err
    assert out["schema"] == "mofdft.diagnose/1" and out["split"] == "train"
    (row,) = out["molecules"]
    assert row["optimizer"] == "precond-lbfgs" and 0 < row["solve_steps"] <= 20
    assert isinstance(row["n_negative_modes"], int) and row["n_negative_modes"] >= 0
    lowest = row["lowest_eigenvalues"]
    assert len(lowest) == 5 and lowest == sorted(lowest)
    assert (row["n_negative_modes"] > 0) == (lowest[0] < 0)
    assert row["init_distance"] > 0 and row["final_distance"] >= 0
    assert np.isfinite(row["energy_error_at_ref_kcal"]) and row["proj_grad_norm_at_ref"] > 0
    code, _, err = run_json(capsys, ["diagnose", str(trained), "--data", str(tiny_dataset),
                                     "--split", "nope"])
    assert code == 2 and "no split 'nope'" in err


def test_learned_solve_uses_and_names_the_label_settings(trained, water_xyz, capsys):
    args = ["solve", str(water_xyz), "--functional", str(trained), "--steps", "3", "--json"]
    code, out, err = run_json(capsys, args)
    assert code == 0 and out["basis"] == "sto-3g" and out["grid_level"] == 0
    assert out["label_settings_warnings"] == []
    code, out, err = run_json(capsys, args + ["--grid-level", "1"])
    assert code == 0 and out["grid_level"] == 1
    assert out["label_settings_warnings"] == [
        "grid_level 1 differs from the checkpoint's label setting 0"]


def test_train_size_takes_a_prefix_of_the_split_and_refuses_too_many(tiny_dataset, tmp_path,
                                                                      capsys):
    """``--train-size`` / ``--val-size`` (learning curves): the sizes reach the checkpoint's split
    record; more molecules than the split holds is one line, exit 2, before any label work."""
    code, _, err = run_json(capsys, ["train", "--data", str(tiny_dataset), "--out",
                                     str(tmp_path / "big"), "--epochs", "1", "--train-size", "5",
                                     *TRAIN])
    assert code == 2 and "--train-size 5" in err and "only 1 molecules" in err
    assert "Traceback" not in err and not list(tmp_path.iterdir())
    out = tmp_path / "prefix"
    code, summary, err = run_json(capsys, ["train", "--data", str(tiny_dataset), "--out",
                                           str(out), "--epochs", "1", "--train-size", "1",
                                           "--val-size", "1", "--json", *TRAIN])
    assert code == 0, err
    _, info = load_checkpoint(out)
    assert info.extra["splits"]["train"] == 1 == summary["n_train_molecules"]
    assert info.extra["splits"]["val"] == 1 == summary["n_val_molecules"]
