"""Compare a benchmark run with the committed baseline (``scripts/bench.sh``).

Input: the pytest-benchmark JSON of a run (``--benchmark-json``). Every benchmark is reduced to a
ratio to the fixed reference computation timed in the same run (``tests/benchmarks/conftest.py``):
``extra_info["ratio"]`` when the test recorded one (time / reference measured just before it), else
the median time divided by the session's ``reference_s``. A benchmark *regresses* when its ratio
exceeds ``tolerance`` × its baseline ratio (default 1.5: the CI machine is shared and noisy; a
real slow-down of the code by 1.5× or more is caught, ordinary load fluctuations are not).

Output: the comparison table on stdout, a Markdown table for the README's performance section
(``--table``; ``--readme README.md`` also writes it into the README between the markers
``<!-- BEGIN GENERATED: performance -->`` and ``<!-- END GENERATED: performance -->``), exit status
1 on any regression. ``--update`` writes the run's ratios as the new baseline instead of comparing.

Usage: ``python -m mofdft_jax.bench.compare RUN.json BASELINE.json [--tolerance 1.5]
[--table results/bench/README-table.md] [--readme README.md] [--update]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

DEFAULT_TOLERANCE = 1.5


def run_ratios(run: dict) -> dict[str, dict]:
    """``{name: {"ratio", "seconds", "reference_s", "source"}}`` of a pytest-benchmark JSON."""
    session_ref = run.get("reference_s")
    out = {}
    for bench in run.get("benchmarks", []):
        name = bench.get("fullname") or bench["name"]
        extra = bench.get("extra_info", {}) or {}
        median = float(bench["stats"]["median"])
        if "ratio" in extra:
            out[name] = {"ratio": float(extra["ratio"]),
                         "seconds": float(extra.get("seconds", median)),
                         "reference_s": float(extra.get("reference_s", session_ref or "nan")),
                         "source": "in-test reference"}
        elif session_ref:
            out[name] = {"ratio": median / float(session_ref), "seconds": median,
                         "reference_s": float(session_ref), "source": "session reference"}
    return out


def compare(ratios: dict, baseline: dict, tolerance: float) -> list[dict]:
    """One row per benchmark of the run or the baseline, with status ``ok``, ``REGRESSED``,
    ``faster``, ``new`` or ``not run``."""
    rows = []
    base = baseline.get("ratios", {})
    for name in sorted(set(ratios) | set(base)):
        r, b = ratios.get(name), base.get(name)
        row = {"benchmark": name, "ratio": r["ratio"] if r else None,
               "baseline": float(b) if b is not None else None,
               "seconds": r["seconds"] if r else None,
               "reference_ms": 1e3 * r["reference_s"] if r else None}
        if r is None:
            row["status"], row["change"] = "not run", None
        elif b is None:
            row["status"], row["change"] = "new", None
        else:
            change = r["ratio"] / float(b)
            row["change"] = change
            row["status"] = ("REGRESSED" if change > tolerance else
                             "faster" if change < 1.0 / tolerance else "ok")
        rows.append(row)
    return rows


def _fmt(x, spec):
    return "—" if x is None else format(x, spec)


def format_table(rows: list[dict], tolerance: float, *, markdown: bool) -> str:
    """The comparison as a fixed-width (terminal) or Markdown table."""
    head = ["benchmark", "time (s)", "reference (ms)", "ratio", "baseline", "change", "status"]
    body = [[r["benchmark"].split("::")[-1] if markdown else r["benchmark"],
             _fmt(r["seconds"], ".3g"), _fmt(r["reference_ms"], ".1f"), _fmt(r["ratio"], ".3g"),
             _fmt(r["baseline"], ".3g"), _fmt(r["change"], ".2f") + ("×" if r["change"] else ""),
             r["status"]] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*b) for b in body]
    lines.append(f"(regression: ratio > {tolerance:g} x baseline ratio)")
    return "\n".join(lines)


def splice_generated(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``<!-- BEGIN GENERATED: name -->`` and its END marker
    replaced by ``body`` (the README's generated sections)."""
    begin, end = f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"
    if begin not in text or end not in text:
        raise SystemExit(f"no '{begin}' ... '{end}' block in the README")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + begin + "\n" + body.strip("\n") + "\n" + end + tail


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("baseline", type=Path)
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--table", type=Path, default=None)
    parser.add_argument("--readme", type=Path, default=None,
                        help="also write the table into this README's 'performance' block")
    parser.add_argument("--update", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="with --update: replace only the ratios of the benchmarks in this "
                        "run and keep the baseline's others (a run of some benchmark files)")
    args = parser.parse_args(argv)
    run = json.loads(args.run.read_text())
    ratios = run_ratios(run)
    machine = run.get("machine_info", {})
    when = run.get("datetime") or _dt.datetime.now(_dt.timezone.utc).isoformat()
    cpu = machine.get("cpu", {}) or {}
    where = (f"{cpu.get('brand_raw', machine.get('processor', 'unknown CPU'))}, "
             f"{cpu.get('count', '?')} cores")
    load = run.get("load_average")
    if args.update:
        baseline = {"tolerance": args.tolerance, "date_utc": when, "machine": where,
                    "load_average": load, "reference": run.get("reference"),
                    "reference_s": run.get("reference_s"),
                    "ratios": {k: v["ratio"] for k, v in sorted(ratios.items())}}
        if args.merge and args.baseline.exists():
            kept = json.loads(args.baseline.read_text())
            merged = dict(kept.get("ratios", {}), **baseline["ratios"])
            baseline = dict(kept, ratios=dict(sorted(merged.items())),
                            merged={"date_utc": when, "machine": where,
                                    "reference_s": run.get("reference_s"),
                                    "benchmarks": sorted(ratios)})
        args.baseline.parent.mkdir(parents=True, exist_ok=True)
        args.baseline.write_text(json.dumps(baseline, indent=2) + "\n")
        print(f"baseline written: {args.baseline} ({len(ratios)} benchmarks)")
        baseline_data = baseline
    else:
        baseline_data = (json.loads(args.baseline.read_text()) if args.baseline.exists()
                         else {"ratios": {}})
    rows = compare(ratios, baseline_data, args.tolerance)
    print(format_table(rows, args.tolerance, markdown=False))
    if args.table is not None or args.readme is not None:
        note = (f"Benchmarks of `scripts/bench.sh` on {where}, {when[:19]} UTC"
                + (f", 1-min load average {load:.1f}" if load is not None else "")
                + f". Ratio = time / fixed reference computation timed in the same run "
                  f"({run.get('reference', 'see tests/benchmarks/conftest.py')}); regression "
                  f"when the ratio exceeds {args.tolerance:g}× the committed baseline "
                  f"(`results/bench/baseline.json`, {baseline_data.get('date_utc', '?')[:10]}).")
        markdown = note + "\n\n" + format_table(rows, args.tolerance, markdown=True) + "\n"
        if args.table is not None:
            args.table.parent.mkdir(parents=True, exist_ok=True)
            args.table.write_text(markdown)
        if args.readme is not None:
            args.readme.write_text(splice_generated(args.readme.read_text(), "performance",
                                                    markdown))
    regressed = [r["benchmark"] for r in rows if r["status"] == "REGRESSED"]
    if regressed:
        print(f"bench: {len(regressed)} regression(s): {', '.join(regressed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
