#!/usr/bin/env bash
# The project's test command (README and .ci/run): pytest with the default marker selection of
# pyproject.toml (slow, docker, gpu and benchmark tests excluded; select them with -m).
#
# usage: bash scripts/test.sh [pytest arguments...]     e.g.  bash scripts/test.sh tests/test_cli.py
#
# Runs the python of the active virtual environment ($VIRTUAL_ENV), else ./.venv (made by
# scripts/setup_venv.sh). pytest's exit status 5 (no tests collected) is reported as a failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    PY="$VIRTUAL_ENV/bin/python"
else
    PY="$ROOT/.venv/bin/python"
fi
[ -x "$PY" ] || { echo "test.sh: no python at $PY: run 'bash scripts/setup_venv.sh' first" >&2; exit 2; }
cd "$ROOT"
"$PY" -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests (exit status 5): counted as a failure" >&2
    exit 1
fi
exit "$status"
