"""The extrapolation, peptide-extrapolation and PES/geometry experiments end to end at the test-only
``micro`` scale (STO-3G / grid level 0 labels, tiny models trained for one epoch, 10 solver steps):
every output of the results contract exists with its schema, claims.csv is valid for ``mofdft
verify`` and honest about its scale; plus the analysis functions (the growth-law fit of Methods
4.9, pair errors, curve properties, Kabsch RMSD) on constructed inputs with known answers.
"""

import json

import numpy as np
import pandas as pd
import pytest

from reproduce import extrapolation as ex
from reproduce import peptide_extrapolation as pe
from reproduce import pes_geometry as pg
from reproduce import pipeline as pl
from reproduce import runner
from reproduce.verify import MEASUREMENT_COLUMNS, STATUSES, verify

EXPERIMENTS = ("extrapolation", "peptide_extrapolation", "pes_geometry")


# -------------------------------------------------------------------------------------------------
# analysis functions on constructed inputs


def test_growth_fit_recovers_the_papers_curve():
    """17 QMugs-like bin centres on the paper's M-OFDFT curve: the bounded 4-parameter fit
    reproduces the data and its exponent is the paper's within its own uncertainty."""
    n = np.arange(18.0, 101.0, 5.0)
    y = ex.growth_curve(n, *ex.PAPER_FIT.values())
    fit = ex.fit_error_growth(n, y)
    assert fit.form == "(aN+b)^c+d" and fit.n_sizes == 17 and fit.dof == 13
    assert np.max(np.abs(fit.predict(n) - y)) < 1e-6
    assert 0.474 * 0.5 <= fit.params["a"] <= 0.474 * 1.5
    assert abs(fit.c - (-0.11)) <= max(3 * fit.c_err, 0.05)


def test_growth_fit_uses_fewer_parameters_with_few_sizes():
    # 3 sizes: an exact power law 2 N^-0.3 is recovered exactly
    n3 = np.array([4.0, 5.0, 6.0])
    fit3 = ex.fit_error_growth(n3, 2.0 * n3 ** -0.3)
    assert fit3.form == "A N^c" and fit3.dof == 1
    assert fit3.c == pytest.approx(-0.3, abs=1e-10) and fit3.params["A"] == pytest.approx(2.0)
    assert fit3.c_err == pytest.approx(0.0, abs=1e-8)
    assert "power law" in fit3.note
    # 4 sizes: a fixed at the reference, three parameters
    n4 = np.array([4.0, 6.0, 8.0, 10.0])
    fit4 = ex.fit_error_growth(n4, ex.growth_curve(n4, 0.474, 2.0, 0.4, 0.01))
    assert fit4.form == "(a0 N+b)^c+d" and fit4.params["a"] == 0.474 and fit4.dof == 1
    assert fit4.c == pytest.approx(0.4, abs=1e-3)
    # <= 2 sizes: no fit, never a made-up exponent
    fit2 = ex.fit_error_growth([4.0, 5.0], [0.1, 0.2])
    assert fit2.form == "none" and np.isnan(fit2.c) and "too few" in fit2.note


def test_classical_runs_take_the_first_conformers_of_each_fragment():
    class FakeData:
        meta = {f"{g}{i}": {"fragment": g} for g in ("TG", "GT") for i in range(3)}

        def open(self):
            return type("Shards", (), {"meta": lambda _, f: self.meta[f]})()

    files = ["TG0", "GT0", "TG1", "TG2", "GT1", "GT2"]
    assert pe.first_conformers(FakeData(), files, 2) == {"TG0", "TG1", "GT0", "GT1"}
    assert pe.first_conformers(FakeData(), files, None) is None
    with pytest.raises(ValueError, match="relative energies"):
        pe.first_conformers(FakeData(), files, 1)


def test_size_bins_follow_the_papers_bins():
    assert [ex.size_bin(n, 5) for n in (16, 20, 21, 56, 60, 100)] == [16, 16, 21, 56, 56, 96]
    assert ex.size_bin(7, 1) == 7


def test_exponent_claim_is_omitted_without_a_fit():
    ctx = runner.RunContext(preset="micro", out_dir=None, cache_dir=None)
    sizes = pd.DataFrame([{"role": "test", "method": ex.LEARNED, "n_heavy": 5, "size_bin": "5",
                           "n": 2, "per_atom_mae_kcal": 0.3}])
    claims = ex.make_claims(ctx, sizes, ex.fit_error_growth([5.0], [0.3]), "w")
    assert list(claims["claim_id"]) == ["qmugs_extrap_per_atom_mae"]
    assert set(claims["scale"]) == {"different"}


def test_relative_pairs_per_atom():
    """Pairs within a group only; error per atom = ((E_i - E_j) - (K_i - K_j)) / N_atoms."""
    frame = pd.DataFrame({
        "test_set": "t", "method": "M", "init": "x", "group": ["A", "A", "A", "B"],
        "file": ["a0", "a1", "a2", "b0"], "n_atoms": [10, 10, 10, 20],
        "energy_ha": [1.0, 2.0, 4.0, 0.0], "energy_ks_ha": [1.0, 2.5, 4.0, 0.0]})
    pairs = pe.relative_per_atom(frame)
    assert len(pairs) == 3  # group B has one structure: no pair
    from mofdft_jax.units import HARTREE_TO_KCAL

    got = dict(zip(zip(pairs["file_i"], pairs["file_j"]), pairs["rel_per_atom_error_kcal"]))
    assert got[("a0", "a1")] == pytest.approx(0.5 * HARTREE_TO_KCAL / 10)
    assert got[("a0", "a2")] == pytest.approx(0.0)
    assert got[("a1", "a2")] == pytest.approx(-0.5 * HARTREE_TO_KCAL / 10)


def test_curve_properties():
    x = np.linspace(-0.06, 0.09, 11)
    assert pg.parabola_minimum(x, 3.0 * (x - 0.012) ** 2 + 1.0) == pytest.approx(0.012)
    assert np.isnan(pg.parabola_minimum(x, x))  # monotonic: no interior minimum
    frame = pd.DataFrame({"rel_energy_kcal": [0.0, 1.2, 3.1, 1.0, 0.1]})
    assert pg.barrier_kcal(frame) == pytest.approx(3.1)


def test_kabsch_rmsd_is_invariant_to_rigid_motion(rng):
    a = rng.normal(size=(9, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    assert pg.kabsch_rmsd(a @ q.T + np.array([1.0, -2.0, 0.5]), a) == pytest.approx(0.0,
                                                                                    abs=1e-12)
    b = a.copy()
    b[0] += np.array([0.3, 0.0, 0.0])
    assert 0.0 < pg.kabsch_rmsd(b, a) < 0.3 / np.sqrt(9) + 1e-12


# -------------------------------------------------------------------------------------------------
# the experiments at micro scale


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The three experiments at micro scale, one shared cache."""
    root = tmp_path_factory.mktemp("extrapolation_experiments")
    ctx = runner.RunContext(preset="micro", out_dir=root / "results", cache_dir=root / "cache",
                            progress=False)
    paths = {name: runner.run_experiment(name, ctx) for name in EXPERIMENTS}
    return ctx, paths


def test_registered_with_the_papers_protocol():
    assert set(EXPERIMENTS) <= set(runner.EXPERIMENTS)
    for name in EXPERIMENTS:
        assert runner.load_config(name, "paper")["steps"] == 1000  # spec §4.4
        for preset in ("quick", "cpu"):  # reduced budgets, stated in every workload line
            assert 100 <= runner.load_config(name, preset)["steps"] <= 1000, (name, preset)
    assert runner.load_config("extrapolation", "cpu")["rule"] == "ood"
    assert runner.load_config("peptide_extrapolation", "cpu")["target"] == "tot"
    assert runner.load_config("extrapolation", "cpu")["target"] == "txc"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_results_contract(results, name):
    ctx, paths = results
    folder = paths[name]
    assert folder == ctx.out_dir / name
    for f in (f"{name}.csv", f"{name}.md", "claims.csv", "run_info.json", "summary.csv"):
        assert (folder / f).is_file(), f
    assert list(folder.glob("*.png")), "at least one figure"
    md = (folder / f"{name}.md").read_text()
    assert "## Summary" in md and "## Data" in md and "## Paper vs ours" in md
    info = json.loads((folder / "run_info.json").read_text())
    assert info["config_hash"] == runner.config_hash(pl.load_experiment_config(name, "micro"),
                                                     "micro", 0)
    assert info["preset"] == "micro" and info["wall_s"] > 0 and info["data_fingerprints"]
    claims = pd.read_csv(folder / "claims.csv")
    assert list(claims.columns) == MEASUREMENT_COLUMNS
    assert len(claims) >= 1
    assert set(claims["scale"]) <= {"reduced", "different"}  # never the paper's scale
    assert set(claims["kind"]) == {"measured"}
    assert claims["value"].notna().all() and (claims["n"] > 0).all()
    assert (claims["preset"] == "micro").all()
    assert runner.is_done(ctx, name, pl.load_experiment_config(name, "micro"))


def test_extrapolation_tables(results):
    _, paths = results
    folder = paths["extrapolation"]
    frame = pd.read_csv(folder / "extrapolation.csv")
    assert set(pl.EVAL_COLUMNS) <= set(frame.columns)
    assert set(frame["role"]) == {"test"} and sorted(frame["n_heavy"]) == [2, 3, 4]
    assert set(frame["target"]) == {"txc"} and set(frame["rule"]) == {"ood"}
    assert np.allclose(frame["per_atom_error_kcal"],
                       frame["energy_error_kcal"] / frame["n_atoms"])
    sizes = pd.read_csv(folder / "summary.csv")
    fit = pd.read_csv(folder / "fit.csv")
    assert set(fit["form"]) == {"A N^c"}  # three sizes: the reduced fit, stated as such
    claims = pd.read_csv(folder / "claims.csv").set_index("claim_id")
    assert claims.loc["qmugs_extrap_per_atom_mae", "value"] == pytest.approx(
        sizes.loc[sizes["n_heavy"].idxmax(), "per_atom_mae_kcal"])
    c = fit.set_index("parameter").loc["c", "ours"]
    assert claims.loc["qmugs_error_growth_exponent", "value"] == pytest.approx(c)
    assert "A*N^c" in claims.loc["qmugs_error_growth_exponent", "note"]
    assert "-0.11" in (folder / "extrapolation.md").read_text()


def test_peptide_tables(results):
    _, paths = results
    folder = paths["peptide_extrapolation"]
    frame = pd.read_csv(folder / "peptide_extrapolation.csv")
    assert set(frame["method"]) == {"M-OFDFT", "APBE"}
    assert set(frame["target"]) == {"tot", "classical"}
    relative = pd.read_csv(folder / "relative.csv")
    assert len(relative) == 2  # one conformer pair of GG per method
    summary = pd.read_csv(folder / "summary.csv").set_index("method")
    assert summary.loc["M-OFDFT", "paper_per_atom_rel_mae_kcal"] == 0.098
    claims = pd.read_csv(folder / "claims.csv").set_index("claim_id")
    assert set(claims.index) == {"chignolin_rel_per_atom_mae", "chignolin_rel_per_atom_mae_apbe",
                                 "chignolin_abs_per_atom_mae"}
    assert claims.loc["chignolin_rel_per_atom_mae_apbe", "value"] == pytest.approx(
        summary.loc["APBE", "per_atom_rel_mae_kcal"])
    assert (claims["scale"] == "different").all()


def test_pes_tables(results):
    _, paths = results
    folder = paths["pes_geometry"]
    frame = pd.read_csv(folder / "pes_geometry.csv")
    assert set(frame["method"]) == {"KS-DFT", "M-OFDFT", "APBE"}
    assert set(frame["scan"]) == {"torsion", "stretch"}
    first = frame.groupby(["scan", "method"]).head(1)
    assert np.allclose(first["rel_energy_kcal"], 0.0)
    ks = frame[frame["method"] == "KS-DFT"]
    assert np.allclose(ks["rel_error_vs_ks_kcal"], 0.0)
    geomopt = pd.read_csv(folder / "geomopt.csv")
    assert set(geomopt["method"]) == {"KS-DFT", "M-OFDFT"}
    assert np.allclose(geomopt[geomopt["method"] == "KS-DFT"]["rmsd_to_ks_opt_angstrom"], 0.0,
                       atol=1e-10)
    claims = pd.read_csv(folder / "claims.csv").set_index("claim_id")
    assert claims.loc["geomopt_rmsd", "value"] == pytest.approx(
        geomopt[geomopt["method"] == "M-OFDFT"]["rmsd_to_ks_opt_angstrom"].mean())
    assert {"pes_torsion.png", "pes_stretch.png"} <= {p.name for p in folder.glob("*.png")}


def test_verify_reads_the_results(results):
    ctx, _ = results
    verdicts = {v.claim_id: v for v in verify(ctx.out_dir)}
    assert {v.status for v in verdicts.values()} <= set(STATUSES)
    for cid in ("qmugs_extrap_per_atom_mae", "chignolin_rel_per_atom_mae", "geomopt_rmsd"):
        assert verdicts[cid].status not in ("reproduced", "not run")
