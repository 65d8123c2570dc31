#!/usr/bin/env bash
# Learning curve of issue 19: error against the number of training conformers for two network
# sizes, on fixed held-out ethanol conformers (scripts/ethanol_learning_curve.toml: 401
# conformers, perturbed-potential labels, split 8:1:1).
#   1. mofdft datagen (resumable);
#   2. for each config in CONFIGS and size N in SIZES: mofdft train --train-size N --val-size 20
#      with a fixed budget of optimiser steps (epochs = ceil(STEP_BUDGET * 32 / labelled rows));
#   3. mofdft diagnose at the KS densities of the first N_TEST test conformers (--steps 0: the
#      energy error of the learned functional at p*) and, for the configs in CONVERGED_CONFIGS, a
#      converged precond-lbfgs minimisation from ProjMINAO on the first N_CONVERGED of them.
# Then: python scripts/learning_curve_summary.py OUT results/learning_curve
#
# Usage: scripts/learning_curve.sh [OUT_DIR]    (default ~/.cache/mofdft_jax/learning_curve)
# Environment: SIZES ("20 40 80 160 320"), CONFIGS ("tiny small"), STEP_BUDGET (1500),
#   N_TEST (20), N_CONVERGED (4), CONVERGED_CONFIGS ("small"), WORKERS (datagen, 2).
# Every stage is resumable: rerun the same command after an interruption.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${HOME}/.cache/mofdft_jax/learning_curve}"
MOFDFT="${MOFDFT:-mofdft}"
SIZES=(${SIZES:-20 40 80 160 320})
CONFIGS=(${CONFIGS:-tiny small})
CONVERGED_CONFIGS=" ${CONVERGED_CONFIGS:-small} "
BUDGET="${STEP_BUDGET:-1500}"
mkdir -p "${OUT}"
echo "== datagen -> ${OUT}/data ($(date +%T))"
OMP_NUM_THREADS=1 "${MOFDFT}" datagen "${HERE}/scripts/ethanol_learning_curve.toml" \
    --preset perturbed --out "${OUT}/data" --workers "${WORKERS:-2}"
ROWS_PER_MOLECULE="$(python - "${OUT}/data" <<'PY'
import json, sys
from pathlib import Path
shards = json.loads((Path(sys.argv[1]) / "manifest.json").read_text())["shards"]
steps = [s.get("n_steps", 0) for s in (shards.values() if isinstance(shards, dict) else shards)]
print(f"{sum(steps) / max(len(steps), 1):.3f}" if any(steps) else "31")
PY
)"
for config in "${CONFIGS[@]}"; do
    for n in "${SIZES[@]}"; do
        run="${OUT}/${config}_n${n}"
        epochs="$(python -c "import math; print(max(1, math.ceil(${BUDGET} * 32 / (${n} * ${ROWS_PER_MOLECULE}))))")"
        if [ ! -f "${run}_train.json" ]; then
            echo "== train ${config}, ${n} conformers, ${epochs} epochs ($(date +%T))"
            "${MOFDFT}" train --data "${OUT}/data" --out "${run}" --train-size "${n}" \
                --val-size 20 --epochs "${epochs}" --loss-weights 1,20,0.08 --config "${config}" \
                --target ts_res --batch-size 32 --lr 5e-4 --norm l1 --dropout 0 --seed 0 \
                --json > "${run}_train.json.part" 2> "${run}_train.log"
            mv "${run}_train.json.part" "${run}_train.json"
        fi
        if [ ! -f "${run}_at_ref.json" ]; then
            echo "== diagnose ${config}_n${n} at p* ($(date +%T))"
            "${MOFDFT}" diagnose "${run}" --data "${OUT}/data" --n "${N_TEST:-20}" --steps 0 \
                --no-hessian --out "${run}_at_ref.json" > "${run}_at_ref.log" 2>&1
        fi
        if [[ "${CONVERGED_CONFIGS}" == *" ${config} "* ]] && [ ! -f "${run}_converged.json" ]; then
            echo "== diagnose ${config}_n${n}: converged minimisation ($(date +%T))"
            "${MOFDFT}" diagnose "${run}" --data "${OUT}/data" --n "${N_CONVERGED:-4}" \
                --steps 300 --optimizer precond-lbfgs --no-hessian \
                --out "${run}_converged.json" > "${run}_converged.log" 2>&1
        fi
    done
done
echo "== done ($(date +%T))"
