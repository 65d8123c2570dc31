#!/usr/bin/env bash
# Performance-regression benchmarks: run tests/benchmarks (pytest -m benchmark), reduce every
# benchmark to its ratio to a fixed reference computation timed in the same run
# (tests/benchmarks/conftest.py), compare with the committed baseline results/bench/baseline.json,
# print the comparison table and write results/bench/README-table.md; a full run (not --ci) also
# writes that table into README.md's generated performance block. Exit status 1 when a ratio
# regresses beyond the tolerance.
#
# Tolerance: a benchmark regresses when its ratio exceeds 1.5x its baseline ratio (BENCH_TOLERANCE).
# The CI machine is shared and noisy; the ratio to an in-run reference removes most of the load,
# the 1.5x margin the rest, while a real 1.5x slow-down of the code is still caught.
#
# usage: bash scripts/bench.sh [--ci] [--update-baseline] [pytest arguments...]
#   --ci               the CI subset (a few minutes on 2 cores): BENCH_CI_FILES
#   --update-baseline  write this run's ratios to results/bench/baseline.json instead of comparing
#   --merge-baseline   like --update-baseline, but replace only the ratios of the benchmarks run
#                      (e.g. BENCH_FILES=tests/benchmarks/test_bench_convergence.py) and keep the rest
# environment: BENCH_TOLERANCE (1.5), BENCH_FILES (default: all of tests/benchmarks),
#              BENCH_CI_FILES (default: test_bench_large.py test_bench_functionals.py),
#              BENCH_OUT (results/bench)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    PY="$VIRTUAL_ENV/bin/python"
else
    PY="$ROOT/.venv/bin/python"
fi
[ -x "$PY" ] || { echo "bench.sh: no python at $PY: run 'bash scripts/setup_venv.sh' first" >&2; exit 2; }

TOLERANCE="${BENCH_TOLERANCE:-1.5}"
OUT="${BENCH_OUT:-results/bench}"
FILES="${BENCH_FILES:-tests/benchmarks}"
UPDATE=0
CI=0
EXTRA=()
for arg in "$@"; do
    case "$arg" in
        --ci) CI=1; FILES="${BENCH_CI_FILES:-tests/benchmarks/test_bench_large.py tests/benchmarks/test_bench_functionals.py}" ;;
        --update-baseline) UPDATE=1 ;;
        --merge-baseline) UPDATE=2 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) EXTRA+=("$arg") ;;
    esac
done
mkdir -p "$OUT"
RUN_JSON="$OUT/latest-run.json"
echo "bench.sh: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), files: $FILES"
# shellcheck disable=SC2086  # FILES is a list of paths
"$PY" -m pytest -m benchmark -q -p no:cacheprovider --benchmark-json="$RUN_JSON" \
    --benchmark-columns=median,min,max,rounds $FILES "${EXTRA[@]}"
status=$?
if [ "$status" -ne 0 ]; then
    echo "bench.sh: the benchmarks themselves failed (pytest exit $status)" >&2
    [ -f "$RUN_JSON" ] || exit "$status"
fi
ARGS=("$RUN_JSON" "$OUT/baseline.json" --tolerance "$TOLERANCE" --table "$OUT/README-table.md")
[ "$UPDATE" = 1 ] && ARGS+=(--update)
[ "$UPDATE" = 2 ] && ARGS+=(--update --merge)
# the README's table shows the whole suite: only full runs of the default files write it
[ "$CI" = 0 ] && [ -z "${BENCH_FILES:-}" ] && [ "${#EXTRA[@]}" = 0 ] && ARGS+=(--readme README.md)
"$PY" -m mofdft_jax.bench.compare "${ARGS[@]}"
cmp=$?
[ "$status" -ne 0 ] && exit "$status"
exit "$cmp"
