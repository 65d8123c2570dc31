"""``mofdft verify``: compare every paper claim with what this repository measured.

Inputs:

* ``reproduce/paper_claims.csv`` — the paper's numbers (one row per claim);
* ``reproduce/claim_criteria.csv`` — how each claim is judged (criterion, tolerance, reference);
* ``<results>/<experiment>/claims.csv`` — what an experiment measured, one row per claim it
  addresses (:data:`MEASUREMENT_COLUMNS`).

Output: ``<results>/VERIFY.md`` (and ``verify.csv``) with one row per paper claim and a status:

``reproduced``
    the criterion holds, on the paper's workload and scale (``scale == "paper"``);
``reproduced at reduced scale``
    the criterion holds, but on a smaller or different workload or hardware — the row says which;
``extrapolated``
    the number comes from a fit beyond what was measured (e.g. a KS-DFT time from a scaling fit);
``not reproduced``
    measured, and the criterion fails;
``not run``
    no experiment produced a number for the claim.

The status logic is deliberately one-way: a number measured at reduced scale can never be labelled
plainly "reproduced", and an extrapolated number is never labelled reproduced at all.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

REPRODUCE_DIR = Path(__file__).resolve().parent
PAPER_CLAIMS_CSV = REPRODUCE_DIR / "paper_claims.csv"
CRITERIA_CSV = REPRODUCE_DIR / "claim_criteria.csv"

#: Columns of ``results/<experiment>/claims.csv``.
MEASUREMENT_COLUMNS = [
    "claim_id",   # id from paper_claims.csv
    "value",      # our number, in the claim's unit
    "unit",       # must equal the claim's unit
    "n",          # number of test items behind the number
    "scale",      # "paper" (same workload and scale as the paper) | "reduced" | "different"
    "kind",       # "measured" | "extrapolated"
    "workload",   # what was measured, in words (dataset, size, basis, model config)
    "hardware",   # machine in words (e.g. "2-core CPU (CI machine)", "1x NVIDIA H100")
    "preset",     # quick | cpu | paper | protein-cpu ...
    "note",       # anything a reviewer must know
]

STATUSES = ("reproduced", "reproduced at reduced scale", "extrapolated", "not reproduced",
            "not run")
SCALES = ("paper", "reduced", "different")
KINDS = ("measured", "extrapolated")
CRITERIA = ("at_most", "at_least", "close", "close_abs", "at_most_abs", "worse_than")


class VerifyError(ValueError):
    """Malformed claims, criteria or measurement files (an internal error of the suite)."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The judgement of one claim."""

    claim_id: str
    status: str
    ours: float | None
    paper: float
    unit: str
    criterion_met: bool | None
    detail: str


def load_claims(path: Path = PAPER_CLAIMS_CSV) -> pd.DataFrame:
    """The paper's claims, indexed by ``claim_id``."""
    claims = pd.read_csv(path, dtype={"claim_id": str})
    if claims["claim_id"].duplicated().any():
        raise VerifyError(f"{path}: duplicate claim_id {claims['claim_id'][claims['claim_id'].duplicated()].tolist()}")
    return claims.set_index("claim_id", drop=False)


def load_criteria(path: Path = CRITERIA_CSV, claims: pd.DataFrame | None = None) -> pd.DataFrame:
    """The judging criterion of every claim; every claim must have exactly one."""
    crit = pd.read_csv(path, dtype={"claim_id": str, "reference_claim": str}).set_index(
        "claim_id", drop=False)
    bad = sorted(set(crit["criterion"]) - set(CRITERIA))
    if bad:
        raise VerifyError(f"{path}: unknown criterion {bad}; known: {CRITERIA}")
    if claims is not None:
        missing = sorted(set(claims.index) - set(crit.index))
        extra = sorted(set(crit.index) - set(claims.index))
        if missing or extra:
            raise VerifyError(f"{path}: criteria missing for {missing}, unknown claims {extra}")
    return crit


def load_measurements(results_dir: Path) -> pd.DataFrame:
    """All ``<results_dir>/*/claims.csv`` rows, with the experiment folder name added."""
    frames = []
    for path in sorted(Path(results_dir).glob("*/claims.csv")):
        frame = pd.read_csv(path, dtype={"claim_id": str})
        missing = [c for c in MEASUREMENT_COLUMNS if c not in frame.columns]
        if missing:
            raise VerifyError(f"{path}: missing columns {missing}")
        frame["source"] = str(path.parent.name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=MEASUREMENT_COLUMNS + ["source"])
    out = pd.concat(frames, ignore_index=True)
    for col, allowed in (("scale", SCALES), ("kind", KINDS)):
        bad = sorted(set(out[col]) - set(allowed))
        if bad:
            raise VerifyError(f"measurements: column {col} has {bad}; allowed {allowed}")
    dup = out["claim_id"][out["claim_id"].duplicated()].tolist()
    if dup:
        raise VerifyError(f"measurements: claim(s) {dup} reported by more than one experiment")
    return out.set_index("claim_id", drop=False)


def criterion_holds(criterion: str, ours: float, paper: float, tolerance: float,
                    reference: float | None = None) -> bool:
    """Whether our value meets the claim under ``criterion``.

    * ``at_most``: ours ≤ paper·(1 + tol) (errors, times: lower is better)
    * ``at_least``: ours ≥ paper·(1 − tol) (speed-ups, ratios that are lower bounds)
    * ``close``: |ours − paper| ≤ tol·|paper| (baseline magnitudes)
    * ``close_abs``: |ours − paper| ≤ tol (exponents)
    * ``at_most_abs``: ours ≤ tol (qualitative sign claims, e.g. exponent ≤ 0)
    * ``worse_than``: ours ≥ tol·reference, where reference is OUR value of the reference claim
      (ablations: the ablated model must be clearly worse than our own full model)
    """
    if not math.isfinite(ours):
        return False
    if criterion == "at_most":
        return ours <= paper * (1.0 + tolerance)
    if criterion == "at_least":
        return ours >= paper * (1.0 - tolerance)
    if criterion == "close":
        return abs(ours - paper) <= tolerance * abs(paper)
    if criterion == "close_abs":
        return abs(ours - paper) <= tolerance
    if criterion == "at_most_abs":
        return ours <= tolerance
    if criterion == "worse_than":
        if reference is None or not math.isfinite(reference):
            return False
        return ours >= tolerance * reference
    raise VerifyError(f"unknown criterion {criterion!r}")


def judge_claim(claim: pd.Series, crit: pd.Series, meas: pd.Series | None,
                measurements: pd.DataFrame) -> Verdict:
    """Status of one claim from its criterion and (possibly missing) measurement."""
    paper = float(claim["value"])
    unit = str(claim["unit"])
    if meas is None:
        return Verdict(claim["claim_id"], "not run", None, paper, unit, None,
                       "no experiment reported this claim")
    if str(meas["unit"]) != unit:
        raise VerifyError(f"{claim['claim_id']}: measured unit {meas['unit']!r} != paper unit {unit!r}")
    ours = float(meas["value"])
    if not math.isfinite(ours):
        note = str(meas.get("note", "") or "no number")
        return Verdict(claim["claim_id"], "not run", None, paper, unit, None,
                       f"{note} ({meas['workload']}; preset {meas['preset']})")
    reference = None
    if crit["criterion"] == "worse_than":
        ref_id = str(crit["reference_claim"])
        if ref_id in measurements.index:
            reference = float(measurements.loc[ref_id, "value"])
    met = criterion_holds(str(crit["criterion"]), ours, paper, float(crit["tolerance"]), reference)
    where = f"{meas['workload']} on {meas['hardware']} (preset {meas['preset']})"
    if meas["kind"] == "extrapolated":
        status = "extrapolated"
    elif not met:
        status = "not reproduced"
    elif meas["scale"] == "paper":
        status = "reproduced"
    else:
        status = "reproduced at reduced scale"
    return Verdict(claim["claim_id"], status, ours, paper, unit, met, where)


def verify(results_dir: Path, claims_csv: Path = PAPER_CLAIMS_CSV,
           criteria_csv: Path = CRITERIA_CSV) -> list[Verdict]:
    """Judge every claim of ``claims_csv`` against the measurements under ``results_dir``."""
    claims = load_claims(claims_csv)
    criteria = load_criteria(criteria_csv, claims)
    measurements = load_measurements(results_dir)
    unknown = sorted(set(measurements.index) - set(claims.index))
    if unknown:
        raise VerifyError(f"measurements for unknown claims {unknown}")
    verdicts = []
    for claim_id, claim in claims.iterrows():
        meas = measurements.loc[claim_id] if claim_id in measurements.index else None
        verdicts.append(judge_claim(claim, criteria.loc[claim_id], meas, measurements))
    return verdicts


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.4g}"
    return f"{x:.3e}"


def write_verify_report(verdicts: list[Verdict], results_dir: Path,
                        claims_csv: Path = PAPER_CLAIMS_CSV) -> Path:
    """Write ``VERIFY.md`` and ``verify.csv`` into ``results_dir``; returns the Markdown path."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    claims = load_claims(claims_csv)
    rows = []
    for v in verdicts:
        c = claims.loc[v.claim_id]
        rows.append({"claim_id": v.claim_id, "experiment": c["experiment"], "quantity": c["quantity"],
                     "system": c["system"], "paper": v.paper, "ours": v.ours, "unit": v.unit,
                     "status": v.status, "measured_on": v.detail})
    table = pd.DataFrame(rows)
    table.to_csv(results_dir / "verify.csv", index=False)
    counts = table["status"].value_counts()
    lines = [
        "# Paper claims vs this repository",
        "",
        "Generated by `mofdft verify` from `reproduce/paper_claims.csv`, "
        "`reproduce/claim_criteria.csv` and the `claims.csv` of each experiment under this folder. "
        "Do not edit by hand.",
        "",
        "Status meanings: **reproduced** — criterion met on the paper's workload and scale; "
        "**reproduced at reduced scale** — criterion met on a smaller/different workload or hardware "
        "(named in the last column); **extrapolated** — number from a fit beyond the measured range; "
        "**not reproduced** — measured and the criterion fails; **not run** — no number produced.",
        "",
        "| status | claims |",
        "|---|---|",
    ]
    lines += [f"| {s} | {int(counts.get(s, 0))} |" for s in STATUSES]
    lines += ["", "| claim | quantity | system | paper | ours | unit | status | measured on |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['claim_id']}` | {r['quantity']} | {r['system']} | {_fmt(r['paper'])} | "
                     f"{_fmt(r['ours'])} | {r['unit']} | {r['status']} | {r['measured_on']} |")
    path = results_dir / "VERIFY.md"
    path.write_text("\n".join(lines) + "\n")
    return path
