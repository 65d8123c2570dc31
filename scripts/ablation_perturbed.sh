#!/usr/bin/env bash
# Ablation of the landscape fixes of issue 19: the same 41 ethanol conformers
# (scripts/ethanol_perturbed_ablation.toml) labelled three ways --
#   plain      the SCF path only (the paper's labels),
#   perturbed  + one perturbed-potential SCF run per conformer (STRUCTURES25's augmentation),
#   curvature  + Hessian-vector labels from the non-interacting response (one direction a step),
# the small T_S,res network trained on each with the shipped checkpoint's recipe for about the same
# number of optimiser steps (curvature: loss weights 1,20,0.08,CURVATURE_WEIGHT), then
# `mofdft diagnose` on the 4 test conformers (on the plain labels: same p*, same KS energies):
# energy error and negative curvature modes at the KS density, and where a minimisation from
# ProjMINAO ends.
#
# Usage: scripts/ablation_perturbed.sh [OUT_DIR]     (default ~/.cache/mofdft_jax/ablation_perturbed)
# Environment: PLAIN_EPOCHS (200), PERTURBED_EPOCHS (45), CURVATURE_WEIGHT (5), WORKERS (datagen,
#              1), STEPS (solver steps of the diagnosis, 1000), OPTIMIZER (of the diagnosis, sgd),
#              PRESETS (default "plain perturbed curvature"). Every stage is resumable.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${HOME}/.cache/mofdft_jax/ablation_perturbed}"
MOFDFT="${MOFDFT:-mofdft}"
RECIPE="${HERE}/scripts/ethanol_perturbed_ablation.toml"
mkdir -p "${OUT}"
TRAIN_ARGS=(--config small --target ts_res --batch-size 32 --lr 5e-4 --norm l1 --dropout 0 --seed 0)
declare -A EPOCHS=([plain]="${PLAIN_EPOCHS:-200}" [perturbed]="${PERTURBED_EPOCHS:-45}"
                   [curvature]="${PERTURBED_EPOCHS:-45}")
declare -A WEIGHTS=([plain]="1,20,0.08" [perturbed]="1,20,0.08"
                    [curvature]="1,20,0.08,${CURVATURE_WEIGHT:-5}")
PRESETS=(${PRESETS:-plain perturbed curvature})
for preset in "${PRESETS[@]}"; do
    echo "== ${preset}: datagen -> ${OUT}/${preset}"
    OMP_NUM_THREADS=1 "${MOFDFT}" datagen "${RECIPE}" --preset "${preset}" --out "${OUT}/${preset}" \
        --workers "${WORKERS:-1}"
    echo "== ${preset}: train ${EPOCHS[$preset]} epochs -> ${OUT}/${preset}_model"
    "${MOFDFT}" train --data "${OUT}/${preset}" --out "${OUT}/${preset}_model" \
        --epochs "${EPOCHS[$preset]}" --loss-weights "${WEIGHTS[$preset]}" "${TRAIN_ARGS[@]}" \
        --json > "${OUT}/${preset}_train.json"
done
for preset in "${PRESETS[@]}"; do
    echo "== ${preset}: diagnose on the test split"
    "${MOFDFT}" diagnose "${OUT}/${preset}_model" --data "${OUT}/plain" --n 4 \
        --steps "${STEPS:-1000}" --optimizer "${OPTIMIZER:-sgd}" \
        --out "${OUT}/${preset}_diagnose_${OPTIMIZER:-sgd}.json"
done
