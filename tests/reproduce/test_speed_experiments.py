"""The speed experiments (``scaling``, ``protein_speedup``): budget logic and the results contract.

* KS-DFT stops when the next run is predicted over budget; those sizes get the fit's time and are
  labelled ``extrapolated`` (never ``measured``), and so are speed-ups computed from them;
* at the test-only ``micro`` scale both experiments run end to end (real isolated PySCF and
  M-OFDFT processes: alkanes, a dipeptide, STO-3G/grid 0 KS, 5 solver steps) and write every
  output of the results contract; claims.csv passes ``mofdft verify`` and is honest (scale
  ``different``; protein claims only from the protein presets).
"""

import json

import numpy as np
import pandas as pd
import pytest

from reproduce import runner
from reproduce import scaling
from reproduce.verify import MEASUREMENT_COLUMNS, load_measurements, verify


def test_ks_budget_stops_and_extrapolates(monkeypatch):
    def fake_run(job, timeout_s=None, threads=None):
        n = fake_run.sizes[job["system"]]
        return {"status": "ok", "wall_s": 1e-3 * n ** 2.5, "cpu_s": 1e-3 * n ** 2.5,
                "n_electrons": n, "process_wall_s": 1e-3 * n ** 2.5}

    fake_run.sizes = {f"m{n}": n for n in (10, 20, 40, 80, 160, 320)}
    monkeypatch.setattr(scaling, "run_isolated", fake_run)
    systems = [(f"m{n}", f"m{n}", n) for n in (10, 20, 40, 80, 160, 320)]
    # 80 e -> 57 s; 160 e -> 324 s (over the 200 s per-run limit): stop there
    rows = scaling.run_ks_series(systems, {"ks_budget_s": 1000, "ks_max_run_s": 200})
    status = [r["status"] for r in rows]
    assert status == ["ok", "ok", "ok", "ok", "skipped", "skipped"]
    assert "predicted" in rows[4]["message"]
    of_rows = [{"system": s, "method": "M-OFDFT", "status": "ok", "n_electrons": n,
                "wall_s": 0.01 * n, "cpu_s": 0.01 * n} for s, _, n in systems]
    table, fits = scaling.analyse(of_rows + rows, "wall")
    ks = table[table["method"] == "KS-DFT"].set_index("system")
    assert list(ks.loc[["m160", "m320"], "kind"]) == ["extrapolated", "extrapolated"]
    assert abs(fits["KS-DFT"].c - 2.5) < 1e-6
    np.testing.assert_allclose(ks.loc["m320", "wall_s"], 1e-3 * 320 ** 2.5, rtol=1e-6)
    speed = table[table["method"] == "speedup"].set_index("system")
    assert speed.loc["m320", "kind"] == "extrapolated" and speed.loc["m10", "kind"] == "measured"


def test_ks_systems_left_out_are_extrapolated_not_run(monkeypatch):
    def fake_run(job, timeout_s=None, threads=None):
        fake_run.ran.append(job["system"])
        n = int(job["system"][1:])
        return {"status": "ok", "wall_s": 1e-3 * n ** 2.5, "n_electrons": n,
                "process_wall_s": 1e-3 * n ** 2.5}

    fake_run.ran = []
    monkeypatch.setattr(scaling, "run_isolated", fake_run)
    systems = [(f"m{n}", f"m{n}", n) for n in (10, 20, 30, 40)]
    rows = scaling.run_ks_series(systems, {"ks_budget_s": 1000, "ks_max_run_s": 200,
                                           "ks_systems": ["m10", "m20", "m40"]})
    assert fake_run.ran == ["m10", "m20", "m40"]
    left_out = [r for r in rows if r["system"] == "m30"]
    assert left_out[0]["status"] == "skipped" and "ks_systems" in left_out[0]["message"]
    of_rows = [{"system": s, "method": "M-OFDFT", "status": "ok", "n_electrons": n,
                "wall_s": 0.01 * n} for s, _, n in systems]
    table, _ = scaling.analyse(of_rows + rows, "wall")
    ks = table[table["method"] == "KS-DFT"].set_index("system")
    assert ks.loc["m30", "kind"] == "extrapolated"
    np.testing.assert_allclose(ks.loc["m30", "wall_s"], 1e-3 * 30 ** 2.5, rtol=1e-4)


@pytest.fixture(scope="module")
def micro_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    ctx = runner.RunContext(preset="micro", out_dir=root / "results", cache_dir=root / "cache",
                            progress=False)
    from reproduce import protein_speedup

    return ctx, scaling.run(ctx), protein_speedup.run(ctx)


def test_scaling_micro_results_contract(micro_results):
    ctx, path, _ = micro_results
    for f in ("scaling.csv", "scaling.md", "claims.csv", "run_info.json", "fits.csv",
              "scaling.png"):
        assert (path / f).is_file(), f
    table = pd.read_csv(path / "scaling.csv")
    measured = table[(table["kind"] == "measured") & table["method"].isin(scaling.METHODS)]
    assert set(measured["method"]) >= {"M-OFDFT", "KS-DFT"}
    assert (measured[measured["method"] == "M-OFDFT"]["n_steps"] == 5).all()
    assert (measured["wall_s"] > 0).all() and (measured["peak_rss_mb"] > 0).all()
    claims = pd.read_csv(path / "claims.csv")
    assert list(claims.columns) == MEASUREMENT_COLUMNS
    assert set(claims["claim_id"]) >= {"scaling_exponent_mofdft", "scaling_exponent_ksdft"}
    assert set(claims["scale"]) == {"different"}
    info = json.loads((path / "run_info.json").read_text())
    assert info["preset"] == "micro" and info["hardware"] and "load" in (
        path / "scaling.md").read_text()


def test_protein_micro_results_contract(micro_results):
    ctx, _, path = micro_results
    assert path.name == "protein_speedup"
    table = pd.read_csv(path / "protein_speedup.csv")
    row = table.iloc[0]
    assert row["mode"] == "large" and bool(row["stand_in"]) and row["n_steps"] == 5
    # the KS time of the stand-in is the scaling fit, labelled extrapolated
    assert row["ks_kind"] == "extrapolated" and row["speedup"] > 0
    summary = pd.read_csv(path / "summary.csv")
    assert "speed-up (paper)" in summary.columns
    # a stand-in makes no protein claim
    assert len(pd.read_csv(path / "claims.csv")) == 0
    measurements = load_measurements(ctx.out_dir)
    verdicts = {v.claim_id: v for v in verify(ctx.out_dir)}
    assert "protein_2wxc_speedup" not in set(measurements["claim_id"])
    assert verdicts["scaling_exponent_ksdft"].status != "reproduced"  # never at paper scale


def test_protein_keep_previous_keeps_other_systems(micro_results, tmp_path):
    """A second run with ``keep_previous`` adds its system beside the earlier rows: the earlier
    measurement is kept as it was (times, date, commit), its KS time re-extrapolated with the
    current fit; without it the folder is replaced."""
    import shutil

    from reproduce import protein_speedup

    ctx, _, first = micro_results
    out = tmp_path / "results"
    for name in ("scaling", "protein_speedup"):
        shutil.copytree(ctx.out_dir / name, out / name)
    ctx2 = runner.RunContext(preset="micro", out_dir=out, cache_dir=ctx.cache_dir, progress=False)
    before = pd.read_csv(first / "protein_speedup.csv").set_index("system")
    path = protein_speedup.run(ctx2, systems=["alkane:1"], keep_previous=True)
    table = pd.read_csv(path / "protein_speedup.csv").set_index("system")
    assert sorted(table.index) == ["alkane:1", "peptide:GG"]
    for col in ("wall_s", "cpu_s", "peak_rss_mb", "energy_ha", "measured_at_utc"):
        assert table.loc["peptide:GG", col] == before.loc["peptide:GG", col], col
    assert table.loc["peptide:GG", "ks_kind"] == "extrapolated"
    np.testing.assert_allclose(table.loc["peptide:GG", "ks_time_s"],
                               before.loc["peptide:GG", "ks_time_s"], rtol=1e-12)
    info = json.loads((path / "run_info.json").read_text())
    assert list(info["kept_from_earlier_runs"]) == ["peptide:GG"]
    assert info["config"]["systems"] == ["alkane:1"]
    # refit only: nothing solved, every row kept with its measured columns
    path = protein_speedup.run(ctx2, refit_only=True)
    refit = pd.read_csv(path / "protein_speedup.csv").set_index("system")
    assert sorted(refit.index) == ["alkane:1", "peptide:GG"]
    for col in ("wall_s", "measured_at_utc", "ks_time_s"):
        assert (refit[col] == table[col]).all(), col
    info = json.loads((path / "run_info.json").read_text())
    assert info["refit_only"] and info["config"]["systems"] == []
    assert info["solves_wall_s"] == pytest.approx(table["process_wall_s"].sum())
    # default: the folder holds this run's systems only
    path = protein_speedup.run(ctx2, systems=["alkane:1"])
    assert list(pd.read_csv(path / "protein_speedup.csv")["system"]) == ["alkane:1"]


def test_exponent_claimed_only_when_determined():
    """A growth exponent is claimed only over a >= 4x electron range and with a standard error
    of at most 0.5; otherwise the value is NaN (verify: not run) and the note says why."""
    from types import SimpleNamespace

    def fit(c, c_err, lo, hi):
        return SimpleNamespace(c=c, c_err=c_err, n_range=(lo, hi), form="(aN+b)^c+d")

    assert scaling.exponent_claim(fit(1.46, 0.1, 10, 190), "load 2")[0] == 1.46
    value, note = scaling.exponent_claim(fit(1.34, 3.16, 10, 190), "load 2")
    assert np.isnan(value) and "not determined" in note and "1.34 ± 3.2" in note
    value, note = scaling.exponent_claim(fit(0.18, 0.01, 10, 26), "load 2")
    assert np.isnan(value) and "too narrow" in note
    assert np.isnan(scaling.exponent_claim(fit(2.0, float("inf"), 10, 190), "")[0])
