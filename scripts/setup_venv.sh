#!/usr/bin/env bash
# Create a virtual environment from the hash lock and install mofdft_jax into it (editable).
#
# usage: bash scripts/setup_venv.sh [--variant cpu|cuda12] [--fresh] [VENV_DIR]   (default: .venv)
#
# Installs ONLY what requirements/<variant>.txt pins, every file hash-checked: setuptools first
# (from the lock), then the lock with --no-deps and no isolated build environment (so the one sdist
# is built by the locked setuptools, with no unpinned download), then this package, --no-deps.
# Python: $PYTHON, else python3.11, else python3 (the locks target CPython 3.11).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VARIANT=cpu
FRESH=0
VENV="$ROOT/.venv"
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) VARIANT="${2:?--variant needs a value}"; shift 2 ;;
        --fresh) FRESH=1; shift ;;
        -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "setup_venv.sh: unknown option $1" >&2; exit 2 ;;
        *) VENV="$1"; shift ;;
    esac
done
LOCK="$ROOT/requirements/$VARIANT.txt"
[ -f "$LOCK" ] || { echo "setup_venv.sh: no lock file $LOCK (variant cpu|cuda12)" >&2; exit 2; }

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    PY="$(command -v python3.11 || command -v python3 || true)"
fi
[ -n "$PY" ] || { echo "setup_venv.sh: no python3.11 found (set PYTHON=...)" >&2; exit 2; }
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$PYVER" in
    3.11) ;;
    3.1[2-9]) echo "setup_venv.sh: warning: $PY is Python $PYVER; the locks were resolved for 3.11" >&2 ;;
    *) echo "setup_venv.sh: $PY is Python $PYVER; need 3.11" >&2; exit 2 ;;
esac

if [ "$FRESH" = 1 ]; then rm -rf "$VENV"; fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup_venv.sh: creating $VENV with $PY (Python $PYVER)" >&2
    "$PY" -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
SETUPTOOLS_REQ="$(mktemp)"
trap 'rm -f "$SETUPTOOLS_REQ"' EXIT
awk '/^[^ #]/ { keep = ($0 ~ /^setuptools==/) } keep' "$LOCK" >"$SETUPTOOLS_REQ"
echo "setup_venv.sh: installing requirements/$VARIANT.txt (hash-checked) into $VENV" >&2
"$VENV/bin/python" -m pip install -q --require-hashes --no-deps -r "$SETUPTOOLS_REQ"
"$VENV/bin/python" -m pip install -q --require-hashes --no-deps --no-build-isolation --use-pep517 -r "$LOCK"
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
"$VENV/bin/python" -m pip check
echo "setup_venv.sh: done: $("$VENV/bin/mofdft" --version) in $VENV" >&2
