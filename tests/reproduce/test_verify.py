"""`mofdft verify` status logic on constructed inputs, including the honest-label cases."""

import math

import pandas as pd
import pytest

from reproduce.verify import (
    MEASUREMENT_COLUMNS,
    STATUSES,
    VerifyError,
    criterion_holds,
    load_claims,
    load_criteria,
    verify,
    write_verify_report,
)


def _write_measurements(results_dir, experiment, rows):
    exp = results_dir / experiment
    exp.mkdir(parents=True, exist_ok=True)
    base = {"n": 10, "scale": "paper", "kind": "measured", "workload": "w", "hardware": "h",
            "preset": "paper", "note": ""}
    frame = pd.DataFrame([{**base, **r} for r in rows])[MEASUREMENT_COLUMNS]
    frame.to_csv(exp / "claims.csv", index=False)


def _by_id(verdicts):
    return {v.claim_id: v for v in verdicts}


def test_shipped_claims_and_criteria_are_consistent():
    claims = load_claims()
    crit = load_criteria(claims=claims)
    assert len(claims) == len(crit) == 37
    assert set(claims["experiment"]) >= {"accuracy_in_scale", "density_quality", "ablation",
                                         "extrapolation", "speed", "scaling", "geometry"}


def test_nothing_measured_means_not_run(tmp_path):
    verdicts = verify(tmp_path)
    assert {v.status for v in verdicts} == {"not run"}
    assert all(v.ours is None for v in verdicts)


@pytest.mark.parametrize("scale", ["reduced", "different"])
def test_reduced_or_different_workload_is_never_plainly_reproduced(tmp_path, scale):
    # a value far better than the paper's, but on a smaller workload
    _write_measurements(tmp_path, "accuracy_in_scale", [
        {"claim_id": "ethanol_energy_mae", "value": 0.01, "unit": "kcal/mol", "scale": scale}])
    v = _by_id(verify(tmp_path))["ethanol_energy_mae"]
    assert v.status == "reproduced at reduced scale"
    assert v.status != "reproduced"


def test_paper_scale_pass_and_fail(tmp_path):
    _write_measurements(tmp_path, "accuracy_in_scale", [
        {"claim_id": "ethanol_energy_mae", "value": 0.20, "unit": "kcal/mol"},   # ≤ 0.18·1.25
        {"claim_id": "ethanol_force_mae", "value": 1.60, "unit": "kcal/mol/A"},  # > 1.18·1.25
    ])
    v = _by_id(verify(tmp_path))
    assert v["ethanol_energy_mae"].status == "reproduced"
    assert v["ethanol_force_mae"].status == "not reproduced"


def test_failing_reduced_scale_is_not_reproduced(tmp_path):
    _write_measurements(tmp_path, "x", [
        {"claim_id": "qm9_energy_mae", "value": 5.0, "unit": "kcal/mol", "scale": "reduced"}])
    assert _by_id(verify(tmp_path))["qm9_energy_mae"].status == "not reproduced"


def test_measurement_without_a_number_is_not_run_with_its_reason(tmp_path):
    """An experiment that declines to claim a number (NaN, e.g. a size range too narrow for a
    scaling exponent) is reported as not run, with the experiment's reason."""
    _write_measurements(tmp_path, "scaling", [
        {"claim_id": "scaling_exponent_mofdft", "value": float("nan"), "unit": "1",
         "scale": "different", "note": "electron range 10-26 spans less than 4x"}])
    v = _by_id(verify(tmp_path))["scaling_exponent_mofdft"]
    assert v.status == "not run" and v.ours is None
    assert "spans less than 4x" in v.detail


def test_extrapolated_is_never_reproduced_even_if_it_passes(tmp_path):
    _write_measurements(tmp_path, "speed", [
        {"claim_id": "protein_2wxc_speedup", "value": 1000.0, "unit": "x", "kind": "extrapolated"},
        {"claim_id": "protein_1prb_speedup", "value": 2.0, "unit": "x", "kind": "extrapolated"}])
    v = _by_id(verify(tmp_path))
    assert v["protein_2wxc_speedup"].status == "extrapolated"
    assert v["protein_1prb_speedup"].status == "extrapolated"


def test_ablation_is_judged_against_our_own_full_model(tmp_path):
    _write_measurements(tmp_path, "acc", [
        {"claim_id": "ethanol_energy_mae", "value": 0.8, "unit": "kcal/mol", "scale": "reduced"}])
    _write_measurements(tmp_path, "abl", [
        {"claim_id": "ablation_no_grad_label", "value": 9.0, "unit": "kcal/mol", "scale": "reduced"},
        {"claim_id": "ablation_no_multistep", "value": 2.0, "unit": "kcal/mol", "scale": "reduced"}])
    v = _by_id(verify(tmp_path))
    assert v["ablation_no_grad_label"].status == "reproduced at reduced scale"  # 9.0 >= 10 * 0.8
    assert v["ablation_no_multistep"].status == "not reproduced"  # 2.0 < 3 * 0.8


def test_ablation_without_reference_measurement_fails(tmp_path):
    _write_measurements(tmp_path, "abl", [
        {"claim_id": "ablation_no_grad_label", "value": 100.0, "unit": "kcal/mol"}])
    assert _by_id(verify(tmp_path))["ablation_no_grad_label"].status == "not reproduced"


@pytest.mark.parametrize("criterion,ours,paper,tol,ok", [
    ("at_most", 1.0, 1.0, 0.0, True), ("at_most", 1.01, 1.0, 0.0, False),
    ("at_least", 30.0, 25.6, 0.0, True), ("at_least", 20.0, 25.6, 0.0, False),
    ("close", 1.4, 1.0, 0.5, True), ("close", 0.4, 1.0, 0.5, False),
    ("close_abs", 2.3, 2.49, 0.3, True), ("close_abs", 2.0, 2.49, 0.3, False),
    ("at_most_abs", -0.2, -0.11, 0.0, True), ("at_most_abs", 0.1, -0.11, 0.0, False),
    ("at_most", math.nan, 1.0, 0.5, False), ("at_least", math.inf, 1.0, 0.5, False),
])
def test_criteria(criterion, ours, paper, tol, ok):
    assert criterion_holds(criterion, ours, paper, tol) is ok


def test_unit_mismatch_and_unknown_claim_are_internal_errors(tmp_path):
    _write_measurements(tmp_path, "a", [
        {"claim_id": "ethanol_energy_mae", "value": 0.1, "unit": "Ha"}])
    with pytest.raises(VerifyError, match="unit"):
        verify(tmp_path)
    _write_measurements(tmp_path, "a", [{"claim_id": "no_such_claim", "value": 0.1, "unit": "x"}])
    with pytest.raises(VerifyError, match="unknown claims"):
        verify(tmp_path)


def test_report_lists_every_claim_once(tmp_path):
    _write_measurements(tmp_path, "acc", [
        {"claim_id": "ethanol_energy_mae", "value": 0.5, "unit": "kcal/mol", "scale": "reduced",
         "workload": "40 thermal conformers, PBE/6-31G", "hardware": "2-core CPU"}])
    path = write_verify_report(verify(tmp_path), tmp_path)
    text = path.read_text()
    claims = load_claims()
    for cid in claims.index:
        assert text.count(f"`{cid}`") == 1
    assert "40 thermal conformers, PBE/6-31G on 2-core CPU" in text
    table = pd.read_csv(tmp_path / "verify.csv")
    assert set(table["status"]) <= set(STATUSES)


def test_cli_verify_exit_zero_on_honest_failures(tmp_path):
    from mofdft_jax.cli import main

    _write_measurements(tmp_path, "acc", [
        {"claim_id": "ethanol_energy_mae", "value": 50.0, "unit": "kcal/mol"}])
    assert main(["verify", "--results", str(tmp_path)]) == 0
    assert "not reproduced" in (tmp_path / "VERIFY.md").read_text()
    assert main(["verify", "--results", str(tmp_path / "missing")]) == 2
