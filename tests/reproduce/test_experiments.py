"""The reproduction experiments end to end at the test-only ``micro`` scale (water conformers,
STO-3G / grid level 0, a tiny model trained for one epoch, 10 solver steps): every output of the
results contract exists with its schema, claims.csv is valid for ``mofdft verify`` and honest about
its scale, a rerun is skipped (or, forced, gives the same numbers), and the README generator reads
the results.
"""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reproduce import runner
from reproduce import pipeline as pl
from reproduce.verify import MEASUREMENT_COLUMNS, STATUSES, load_measurements, verify

EXPERIMENTS = ("accuracy_in_scale", "density_quality", "ablation")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """All three experiments at micro scale with one shared cache, as ``mofdft reproduce`` runs
    them."""
    root = tmp_path_factory.mktemp("experiments")
    ctx = runner.RunContext(preset="micro", out_dir=root / "results", cache_dir=root / "cache",
                            progress=False)
    paths = {name: runner.run_experiment(name, ctx) for name in EXPERIMENTS}
    return ctx, paths


def test_registered_in_runner():
    assert set(EXPERIMENTS) <= set(runner.EXPERIMENTS)
    for name in EXPERIMENTS:
        assert runner.load_config(name, "paper")["steps"] == 1000  # the paper's protocol
        for preset in ("quick", "cpu"):
            assert 0 < runner.load_config(name, preset)["steps"] <= 1000


def test_shared_system_tables_are_identical():
    """The three experiments share one dataset/model/cached solves only if their tables agree."""
    configs = {n: tomllib.loads((runner.CONFIG_DIR / f"{n}.toml").read_text()) for n in EXPERIMENTS}
    for preset in ("micro", "quick", "cpu", "paper"):
        tables = [configs[n][preset]["ethanol"] for n in EXPERIMENTS]
        assert all(t == tables[0] for t in tables), preset


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_results_contract(results, name):
    ctx, paths = results
    folder = paths[name]
    assert folder == ctx.out_dir / name
    for f in (f"{name}.csv", f"{name}.md", "claims.csv", "run_info.json", "summary.csv"):
        assert (folder / f).is_file(), f
    assert list(folder.glob("*.png")), "at least one figure"
    md = (folder / f"{name}.md").read_text()
    assert "## Summary" in md and "## Data" in md
    info = json.loads((folder / "run_info.json").read_text())
    config = pl.load_experiment_config(name, "micro")
    assert info["config_hash"] == runner.config_hash(config, "micro", 0)
    assert info["preset"] == "micro" and info["wall_s"] > 0 and info["git_commit"] is not None
    assert info["data_fingerprints"]["ethanol_dataset"]
    claims = pd.read_csv(folder / "claims.csv")
    assert list(claims.columns) == MEASUREMENT_COLUMNS
    assert set(claims["scale"]) <= {"reduced", "different"}  # never the paper's scale
    assert set(claims["kind"]) == {"measured"}
    assert claims["value"].notna().all() and (claims["n"] > 0).all()
    assert (claims["preset"] == "micro").all()


def test_accuracy_tables(results):
    _, paths = results
    folder = paths["accuracy_in_scale"]
    frame = pd.read_csv(folder / "accuracy_in_scale.csv")
    assert set(pl.EVAL_COLUMNS) <= set(frame.columns)
    assert set(frame["method"]) == {"M-OFDFT ts_res", "TF+1/9vW"}
    assert set(frame["role"]) == {"test", "reference"}  # the equilibrium structure is evaluated
    summary = pd.read_csv(folder / "summary.csv")
    learned = summary[summary["method"] == "M-OFDFT ts_res"].iloc[0]
    assert learned["paper_energy_mae_kcal"] == 0.18 and learned["n_relative"] == 1
    relative = pd.read_csv(folder / "relative.csv")
    assert set(relative["kind"]) == {"vs equilibrium"}
    claims = pd.read_csv(folder / "claims.csv").set_index("claim_id")
    assert {"ethanol_energy_mae", "ethanol_force_mae", "ethanol_rel_energy_mae",
            "classical_gap"} <= set(claims.index)
    # the claimed values are the summary's
    assert claims.loc["ethanol_energy_mae", "value"] == pytest.approx(learned["energy_mae_kcal"])
    ratio = (summary[summary["method"] == "TF+1/9vW"]["rel_energy_mae_kcal"].iloc[0]
             / learned["rel_energy_mae_kcal"])
    assert claims.loc["classical_gap", "value"] == pytest.approx(ratio)


def test_density_quality_tables(results):
    _, paths = results
    folder = paths["density_quality"]
    charges = pd.read_csv(folder / "charges.csv")
    # neutral molecule: Hirshfeld charges of every density sum to ~0, electrons integrate to N
    sums = charges.groupby(["file", "density"])["charge"].sum()
    assert sums.abs().max() < 2e-3
    assert (charges["electrons"] - 10.0).abs().max() < 2e-3
    summary = pd.read_csv(folder / "summary.csv").set_index("density")
    assert set(summary.index) == {"M-OFDFT", "TF+1/9vW"}
    claims = pd.read_csv(folder / "claims.csv").set_index("claim_id")
    assert claims.loc["ethanol_charge_mae", "value"] == pytest.approx(
        summary.loc["M-OFDFT", "charge_mae_e"])
    radial = pd.read_csv(folder / "radial.csv")
    assert set(radial["density"]) == {"KS", "M-OFDFT", "TF+1/9vW"}
    assert set(radial["atom_label"]) == {"O"}  # water has no carbon


def test_ablation_tables(results):
    _, paths = results
    folder = paths["ablation"]
    summary = pd.read_csv(folder / "summary.csv")
    assert set(summary["variant"]) == {"full", "no gradient labels"}
    full = summary[summary["variant"] == "full"].iloc[0]
    assert full["energy_ratio_to_full"] == pytest.approx(1.0)
    # the full model is the accuracy experiment's ts_res model (same cached checkpoint)
    acc = json.loads((paths["accuracy_in_scale"] / "run_info.json").read_text())
    abl = json.loads((folder / "run_info.json").read_text())
    assert abl["data_fingerprints"]["full_weights"] == acc["data_fingerprints"][
        "ethanol_ts_res_weights"]
    assert abl["data_fingerprints"]["no gradient labels_weights"] != abl["data_fingerprints"][
        "full_weights"]
    claims = pd.read_csv(folder / "claims.csv")
    assert list(claims["claim_id"]) == ["ablation_no_grad_label"]


def test_verify_reads_the_results(results):
    ctx, _ = results
    measurements = load_measurements(ctx.out_dir)
    assert len(measurements) >= 8
    verdicts = {v.claim_id: v for v in verify(ctx.out_dir)}
    assert {v.status for v in verdicts.values()} <= set(STATUSES)
    for cid in measurements.index:
        assert verdicts[cid].status != "reproduced"  # micro scale is never the paper's
        assert verdicts[cid].status != "not run"
    assert verdicts["qm9_energy_mae"].status == "not run"


def test_rerun_is_skipped_and_forced_rerun_gives_same_numbers(results):
    ctx, paths = results
    name = "accuracy_in_scale"
    assert runner.is_done(ctx, name, pl.load_experiment_config(name, "micro"))
    before = pd.read_csv(paths[name] / f"{name}.csv")
    forced = runner.RunContext(preset="micro", out_dir=ctx.out_dir.parent / "forced",
                               cache_dir=ctx.cache_dir, force=True, progress=False)
    after = pd.read_csv(runner.run_experiment(name, forced) / f"{name}.csv")
    cols = [c for c in before.columns if c not in pl.TIMING_COLUMNS]
    pd.testing.assert_frame_equal(before[cols], after[cols])


def test_readme_results_script(results):
    ctx, _ = results
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "readme_results.py"),
                          "--results", str(ctx.out_dir)], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert "| claim |" in out and "ethanol_energy_mae" in out
    assert "reproduced at reduced scale" in out or "not reproduced" in out
    assert "not run" in out


def test_readme_results_splices_generated_blocks(results, tmp_path):
    """``--readme`` replaces only the text between the GENERATED markers, with what it prints."""
    ctx, _ = results
    readme = tmp_path / "README.md"
    blocks = {name: (f"<!-- BEGIN GENERATED: {name} -->\nstale {name}\n"
                     f"<!-- END GENERATED: {name} -->") for name in ("results", "experiment times")}
    readme.write_text(f"# top\n\n{blocks['experiment times']}\n\nmiddle\n\n{blocks['results']}\n"
                      "\ntail\n")
    script = [sys.executable, str(REPO / "scripts" / "readme_results.py"), "--results",
              str(ctx.out_dir)]
    printed = subprocess.run(script, capture_output=True, text=True, check=True).stdout
    subprocess.run(script + ["--readme", str(readme)], check=True, capture_output=True)
    text = readme.read_text()
    assert "stale" not in text and text.startswith("# top\n") and text.endswith("\ntail\n")
    assert "middle" in text and text.count("<!-- BEGIN GENERATED") == 2
    claims = text.split("<!-- BEGIN GENERATED: results -->\n")[1].split("<!-- END")[0]
    times = text.split("<!-- BEGIN GENERATED: experiment times -->\n")[1].split("<!-- END")[0]
    assert claims.strip() + "\n\n" + times.strip() == printed.strip()


def test_readme_timing_of_a_ks_refit_shows_the_solves(tmp_path):
    """A protein folder rewritten by ``--refit-only`` (KS re-extrapolated, nothing solved) is
    listed with the wall time of its kept solves and their dates, not the refit's seconds."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_results",
                                                  REPO / "scripts" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, info in (("scaling", {"wall_s": 780.0, "cpu_s": 1500.0}),
                       ("protein_speedup_cpu", {"wall_s": 1.5, "refit_only": True,
                                                "solves_wall_s": 2548.0,
                                                "kept_from_earlier_runs": {
                                                    "protein:1PRB": "2026-11-25T22:22",
                                                    "protein:2WXC": "2026-11-25T19:05"}})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run_info.json").write_text(json.dumps(
            {"experiment": name, "preset": "cpu", "hardware": "2-core CPU",
             "date_utc": "2026-11-26T04:00", **info}))
    lines = module.timing_section([tmp_path])
    row = next(line for line in lines if line.startswith("| protein_speedup_cpu"))
    assert "42.5 min" in row and "KS re-extrapolated 2026-11-26T04:00" in row
    assert "2026-11-25T19:05" in row and "1 s" not in row
    assert any(line.startswith("| scaling | cpu | 13.0 min | 25.0 min") for line in lines)


# ------------------------------------------------------------------------------------------------
# density-quality host quadrature (independent references)


@pytest.fixture(scope="module")
def water_ks():
    from pyscf import dft

    from mofdft_jax.molecules import Molecule
    from mofdft_jax.qchem.basis import make_mol

    mol = make_mol(Molecule.from_angstrom([8, 1, 1], [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692],
                                                      [0.0, -0.7572, -0.4692]], name="water"),
                   "6-31G")
    mf = dft.RKS(mol, xc="pbe")
    mf.verbose = 0
    mf.kernel()
    return mol, mf


def test_dipole_quadrature_matches_pyscf(water_ks):
    from reproduce import density_quality as dq
    from mofdft_jax.units import AU_TO_DEBYE

    mol, mf = water_ks
    coords, weights = dq.make_property_grid(mol, 3)
    ao = mol.eval_gto("GTOval_sph", coords)
    rho = np.einsum("gi,ij,gj->g", ao, mf.make_rdm1(), ao)
    ours = dq.dipole_moment(mol, rho, coords, weights) * AU_TO_DEBYE
    ref = mf.dip_moment(unit="Debye", verbose=0)
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    assert np.linalg.norm(ref) > 1.5  # water's dipole is ~2 D: the test is not trivially zero


def test_hirshfeld_of_the_promolecule_is_zero_and_charges_sum_to_zero(water_ks):
    from reproduce import density_quality as dq

    mol, mf = water_ks
    coords, weights = dq.make_property_grid(mol, 3)
    pro = dq.promolecule_densities(mol, coords, dq.free_atom_density_matrices(mol))
    # each free atom is neutral: Z_A electrons
    np.testing.assert_allclose(pro @ weights, mol.atom_charges(), atol=2e-4)
    np.testing.assert_allclose(dq.hirshfeld_charges(mol, pro.sum(axis=0), weights, pro), 0.0,
                               atol=2e-4)
    ao = mol.eval_gto("GTOval_sph", coords)
    rho = np.einsum("gi,ij,gj->g", ao, mf.make_rdm1(), ao)
    q = dq.hirshfeld_charges(mol, rho, weights, pro)
    assert abs(q.sum()) < 2e-4
    assert q[0] < -0.2 and q[1] > 0.1 and q[1] == pytest.approx(q[2], abs=1e-5)  # O−, H+


def test_radial_average_of_a_spherical_gaussian():
    from pyscf import gto

    from reproduce import density_quality as dq

    # one normalised s Gaussian exp(-a r^2) centred at the origin: the spherical average is exact
    a = 1.3
    auxmol = gto.M(atom=[["He", (0.0, 0.0, 0.0)]], basis={"He": [[0, [a, 1.0]]]}, unit="Bohr",
                   spin=0, verbose=0)
    radii = np.array([0.1, 0.5, 1.0, 2.0])
    norm = auxmol.eval_gto("GTOval_sph", np.zeros((1, 3)))[0, 0]
    got = dq.radial_average(auxmol, np.array([1.0]), np.zeros(3), radii)
    np.testing.assert_allclose(got, norm * np.exp(-a * radii ** 2), rtol=1e-12)
    shifted = dq.radial_average(auxmol, np.array([1.0]), np.array([0.0, 0.0, 1.0]), radii)
    assert not np.allclose(shifted, got)  # off-centre: no longer the same profile
