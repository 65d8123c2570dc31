"""Timing harness (mofdft_jax.bench): scaling fits, baseline comparison, isolated runs.

* ``fit_scaling`` recovers the exponent of synthetic t = (a N + b)^c + d data within its standard
  error band, falls back to a log-log power law with few points, and ``predict`` brackets the truth;
* ``compare`` flags a ratio above tolerance × baseline as a regression (exit status 1), reports new
  and missing benchmarks, and writes the README table;
* ``run_isolated`` runs a KS-DFT job in a fresh process (PySCF energy of H₂ matches an in-process
  run) and reports a time-out as a lower bound instead of a number;
* ``profile_step`` (roofline) counts every block of the network, not XLA's one loop body.
"""

import json

import numpy as np
import pytest

from mofdft_jax.bench import fit_scaling, loglog_slope, predict, run_isolated
from mofdft_jax.bench.compare import compare, main as compare_main, run_ratios


def test_fit_recovers_exponent(rng):
    n = np.array([20, 40, 70, 110, 160, 230, 320, 450, 600], dtype=float)
    truth = (0.024 * n + 0.69) ** 2.49 + 9.81
    times = truth * np.exp(rng.normal(scale=0.03, size=n.size))
    fit = fit_scaling(n, times)
    assert fit.form == "(aN+b)^c+d"
    assert abs(fit.c - 2.49) < max(3 * fit.c_err, 0.15), (fit.c, fit.c_err)
    t, lo, hi = predict(fit, 1000.0)
    t_true = (0.024 * 1000 + 0.69) ** 2.49 + 9.81
    assert lo[0] <= hi[0] and abs(t[0] - t_true) / t_true < 0.3


def test_exponent_uncertainty_is_the_profile_when_the_fit_is_degenerate(rng):
    """Times with a large constant and a linear growth (the cpu preset's M-OFDFT series:
    10-31 s over 10-190 electrons) leave c undetermined: the covariance at the optimum can be
    small, the profile-likelihood half-width is not; a clean power law keeps a tight, finite
    uncertainty no smaller than the covariance's."""
    from mofdft_jax.bench.fit import profile_exponent_halfwidth

    n = np.array([10, 18, 26, 34, 50, 66, 70, 82, 98, 130, 162, 190], dtype=float)
    times = (9.0 + 0.12 * n) * np.exp(rng.normal(scale=0.05, size=n.size))
    fit = fit_scaling(n, times)
    assert fit.c_err > 0.5, (fit.c, fit.c_err)
    n = np.array([20, 40, 70, 110, 160, 230, 320, 450, 600], dtype=float)
    times = ((0.024 * n + 0.69) ** 2.49 + 9.81) * np.exp(rng.normal(scale=0.03, size=n.size))
    fit = fit_scaling(n, times)
    half = profile_exponent_halfwidth(n, times, [fit.a, fit.b, fit.c, fit.d])
    assert 0.0 < half < 0.5 and fit.c_err == pytest.approx(max(half, np.sqrt(fit.cov[2, 2])))
    assert abs(fit.c - 2.49) < 3 * fit.c_err
    # too few degrees of freedom: nothing determined
    assert profile_exponent_halfwidth(n[:4], times[:4], [fit.a, fit.b, fit.c, fit.d]) == np.inf


def test_fit_falls_back_to_power_law_with_few_points():
    n = np.array([10.0, 20.0, 40.0])
    fit = fit_scaling(n, 0.5 * n ** 1.7)
    assert fit.form == "(aN)^c" and abs(fit.c - 1.7) < 1e-10
    np.testing.assert_allclose(fit(n), 0.5 * n ** 1.7, rtol=1e-10)
    slope, _ = loglog_slope(n, 0.5 * n ** 1.7)
    assert abs(slope - 1.7) < 1e-10
    with pytest.raises(ValueError):
        fit_scaling([10.0], [1.0])


def _run_json(ratios: dict, tmp_path, name="run.json"):
    data = {"reference_s": 0.1, "reference": "test", "load_average": 1.0,
            "benchmarks": [{"name": k, "fullname": k, "stats": {"median": v * 0.1},
                            "extra_info": {}} for k, v in ratios.items()]}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path, data


def test_compare_flags_regressions_and_writes_table(tmp_path):
    run_path, run = _run_json({"a": 1.0, "b": 3.2, "c": 0.5}, tmp_path)
    ratios = run_ratios(run)
    assert abs(ratios["b"]["ratio"] - 3.2) < 1e-12 and ratios["b"]["source"] == "session reference"
    baseline = {"ratios": {"a": 1.1, "b": 2.0, "d": 1.0}}
    rows = {r["benchmark"]: r for r in compare(ratios, baseline, 1.5)}
    assert rows["a"]["status"] == "ok" and rows["b"]["status"] == "REGRESSED"
    assert rows["c"]["status"] == "new" and rows["d"]["status"] == "not run"

    base_path = tmp_path / "baseline.json"
    base_path.write_text(json.dumps(baseline))
    table = tmp_path / "table.md"
    assert compare_main([str(run_path), str(base_path), "--table", str(table)]) == 1
    assert "REGRESSED" in table.read_text() and "| benchmark |" in table.read_text()
    # --readme writes the same table between the README's performance markers, nothing else
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- BEGIN GENERATED: performance -->\nstale\n"
                      "<!-- END GENERATED: performance -->\nafter\n")
    assert compare_main([str(run_path), str(base_path), "--readme", str(readme)]) == 1
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("after\n")
    block = text.split("<!-- BEGIN GENERATED: performance -->\n")[1].split("<!-- END")[0]
    assert block == table.read_text()
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="performance"):
        compare_main([str(run_path), str(base_path), "--readme", str(readme)])
    # updating the baseline makes the same run pass
    assert compare_main([str(run_path), str(base_path), "--update"]) == 0
    assert compare_main([str(run_path), str(base_path)]) == 0
    assert json.loads(base_path.read_text())["ratios"]["b"] == pytest.approx(3.2)


def test_merge_updates_only_the_benchmarks_of_the_run(tmp_path):
    """``--update --merge`` (``bench.sh --merge-baseline``): a run of one file replaces its own
    ratios and keeps every other benchmark of the baseline."""
    run_path, _ = _run_json({"new": 2.0, "a": 1.2}, tmp_path)
    base_path = tmp_path / "baseline.json"
    base_path.write_text(json.dumps({"reference_s": 0.2, "ratios": {"a": 1.0, "b": 5.0}}))
    assert compare_main([str(run_path), str(base_path), "--update", "--merge"]) == 0
    merged = json.loads(base_path.read_text())
    assert merged["ratios"] == {"a": pytest.approx(1.2), "b": 5.0, "new": pytest.approx(2.0)}
    assert merged["reference_s"] == 0.2 and merged["merged"]["benchmarks"] == ["a", "new"]


def test_in_test_ratio_takes_precedence(tmp_path):
    _, run = _run_json({"a": 1.0}, tmp_path)
    run["benchmarks"][0]["extra_info"] = {"ratio": 7.0, "seconds": 0.7, "reference_s": 0.1}
    assert run_ratios(run)["a"]["ratio"] == 7.0


def test_isolated_ks_run_matches_in_process(tmp_path):
    from mofdft_jax.molecules import Molecule
    from mofdft_jax.molecules.io import write_xyz
    from mofdft_jax.qchem.basis import make_mol
    from mofdft_jax.qchem.ksdft import make_ks
    from mofdft_jax.qchem.settings import PAPER_SETTINGS

    h2 = Molecule.from_angstrom([1, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]], name="H2")
    path = write_xyz(tmp_path / "h2.xyz", h2)
    settings = {"basis": "sto-3g", "grid_level": 0}
    result = run_isolated({"kind": "ks", "system": str(path), "settings": settings},
                          timeout_s=300, threads=1)
    assert result["status"] == "ok", result
    mf = make_ks(make_mol(h2, "sto-3g"), PAPER_SETTINGS.replace(**settings))
    mf.kernel()
    assert abs(result["energy_ha"] - mf.e_tot) < 1e-9
    assert result["converged"] and result["peak_rss_mb"] > 10 and result["wall_s"] > 0
    assert result["process_wall_s"] >= result["wall_s"]

    timed_out = run_isolated({"kind": "ks", "system": str(path), "settings": settings},
                             timeout_s=0.01)
    assert timed_out["status"] == "timeout" and timed_out["wall_s"] == pytest.approx(0.01)


def test_roofline_profile_counts_every_network_block():
    """``profile_step`` reports, per kernel, the best time, XLA's flops and bytes with the
    network's block scan unrolled (a scanned loop body is counted once by XLA), and the roofline
    max(F/P, B/BW) with the measurement's ratio to it."""
    import dataclasses
    import sys
    from pathlib import Path

    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from mofdft_jax.bench.ofdft import fresh_functional
    from mofdft_jax.bench.roofline import profile_step, roofline_time
    from mofdft_jax.model.graphormer import Graphormer3D, make_config, unrolled_blocks
    from mofdft_jax.solver.learned import make_learned_inputs

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "density"))
    from pyscf_systems import ETHANOL, make_system

    bundle, coeffs = make_system(*ETHANOL)
    functional = fresh_functional("tiny", "txc")
    config = make_config("tiny", num_layers=6)
    functional = dataclasses.replace(functional, model=Graphormer3D(config,
                                                                    key=jax.random.PRNGKey(0)))
    inputs = make_learned_inputs(functional, bundle)
    machine = {"dgemm_gflops": 50.0, "bandwidth_matvec_gbs": 20.0, "bandwidth_triad_gbs": 10.0}
    rows = {r["kernel"]: r for r in profile_step(functional, inputs, coeffs, machine, repeats=2)}
    assert set(rows) == {"hartree", "model", "full step"}
    for r in rows.values():
        assert r["time_ms"] > 0 and r["bytes"] >= r["operand_bytes"]
        assert r["roofline_ms"] == pytest.approx(1e3 * roofline_time(r["flops"], r["bytes"],
                                                                      50.0, 20.0))
        assert r["ratio"] == pytest.approx(r["time_ms"] / r["roofline_ms"])

    # the model row's flops are those of the network traced with all six blocks
    _, static = eqx.partition(functional, eqx.is_array)

    def model(p, inp):
        fn = eqx.combine(inp.params, static)
        return jax.value_and_grad(lambda q: fn.energy(q, inp.bundle, inp.geometry,
                                                      features=inp.features))(p)

    def flops(compiled):
        cost = compiled.cost_analysis()
        return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])

    p = jnp.asarray(coeffs)
    scanned = flops(jax.jit(lambda q, inp: model(q, inp)).lower(p, inputs).compile())
    with unrolled_blocks():
        unrolled = flops(jax.jit(lambda q, inp: model(q, inp)).lower(p, inputs).compile())
    assert unrolled > 1.2 * scanned
    assert rows["model"]["flops"] == pytest.approx(unrolled, rel=1e-6)
