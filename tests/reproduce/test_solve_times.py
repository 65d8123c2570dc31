"""``solve_times``: the per-structure 1000-step timing claims (release README: ethanol, QM9,
chignolin).

At the test-only ``micro`` scale (tiny networks, STO-3G, 5 steps, real isolated M-OFDFT
processes: ethanol with T_S,res on a grid, a dipeptide standing in for chignolin with E_tot) the
experiment writes every output of the results contract, its claims pass ``mofdft verify`` with
scale ``different`` (never ``paper`` for a tiny network or a stand-in), and a second run at the
same commit reuses the measured runs instead of timing again.
"""

import json

import pandas as pd

from reproduce import runner
from reproduce import solve_times
from reproduce.verify import MEASUREMENT_COLUMNS, verify


def test_solve_times_micro_results_contract(tmp_path, monkeypatch):
    ctx = runner.RunContext(preset="micro", out_dir=tmp_path / "results",
                            cache_dir=tmp_path / "cache", progress=False)
    path = solve_times.run(ctx)
    for f in ("solve_times.csv", "solve_times.md", "claims.csv", "run_info.json",
              "summary.csv", "solve_times.png"):
        assert (path / f).exists(), f
    claims = pd.read_csv(path / "claims.csv")
    assert list(claims.columns) == MEASUREMENT_COLUMNS
    assert sorted(claims["claim_id"]) == ["chignolin_solve_time", "ethanol_solve_time"]
    assert (claims["scale"] == "different").all() and (claims["kind"] == "measured").all()
    assert (claims["value"] > 0).all() and (claims["unit"] == "s").all()
    assert claims.set_index("claim_id").loc["chignolin_solve_time", "workload"].endswith(
        "stand-in structure")
    table = pd.read_csv(path / "solve_times.csv").set_index("claim")
    assert table.loc["ethanol_solve_time", "target"] == "ts_res"
    assert table.loc["ethanol_solve_time", "n_grid_points"] > 0
    assert (table["n_steps"] == 5).all() and (table["status"] == "ok").all()
    verdicts = {v.claim_id: v for v in verify(ctx.out_dir)}
    # a tiny network on 5 steps beats the A100's 1000 steps: reduced scale, never "reproduced"
    assert verdicts["ethanol_solve_time"].status == "reproduced at reduced scale"
    assert verdicts["qm9_solve_time"].status == "not run"
    info = json.loads((path / "run_info.json").read_text())
    assert info["preset"] == "micro" and info["runs_wall_s"] > 0

    # resumable: the same commit and hardware reuse the stored runs (no new process)
    def no_run(*args, **kwargs):
        raise AssertionError("a stored run was timed again")

    monkeypatch.setattr(solve_times, "run_isolated", no_run)
    again = pd.read_csv(solve_times.run(ctx) / "claims.csv")
    pd.testing.assert_frame_equal(again, claims)
