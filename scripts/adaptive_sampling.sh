#!/usr/bin/env bash
# Adaptive sampling of issue 19 (docs/landscape.md section 6) on the output of
# scripts/ablation_perturbed.sh (needs OUT/perturbed, OUT/perturbed_model and OUT/plain):
#   round 1   mofdft sample-visited OUT/perturbed_model -> OUT/visited_r1, then a fresh training on
#             the perturbed labels + those states (45 epochs, lr 5e-4)   -> OUT/visited_r1_model
#   round N   sample with the round-(N-1) model -> OUT/visited_rN, then fine-tune that model on
#   (2..R)    all rounds' states (mofdft train --init-from, 20 epochs, lr 2e-4) -> OUT/ft_rN_model
# and after each round `mofdft diagnose` (precond-lbfgs <= 300 steps from ProjMINAO) on the 4 test
# conformers -> OUT/<model>_diagnose_precond-lbfgs.json. Then:
#   python scripts/ablation_perturbed_summary.py OUT results/ablation_landscape/adaptive
#
# Usage: scripts/adaptive_sampling.sh OUT_DIR     Environment: ROUNDS (4). Resumable per stage.
set -euo pipefail

OUT="${1:?usage: scripts/adaptive_sampling.sh OUT_DIR (the output of ablation_perturbed.sh)}"
MOFDFT="${MOFDFT:-mofdft}"
ARGS=(--loss-weights 1,20,0.08,0,0,1 --config small --target ts_res --batch-size 32 --norm l1
      --dropout 0 --seed 0)
prev="${OUT}/perturbed_model"
visited=()
for ((n = 1; n <= ${ROUNDS:-4}; n++)); do
    echo "== round ${n}: sample with ${prev} ($(date +%T))"
    "${MOFDFT}" sample-visited "${prev}" --data "${OUT}/perturbed" --out "${OUT}/visited_r${n}"
    visited+=(--visited "${OUT}/visited_r${n}")
    if ((n == 1)); then
        model="${OUT}/visited_r1_model"
        train=(--epochs 45 --lr 5e-4)
    else
        model="${OUT}/ft_r${n}_model"
        train=(--init-from "${prev}" --epochs 20 --lr 2e-4)
    fi
    if [ ! -f "${model}_train.json" ]; then
        echo "== round ${n}: train -> ${model} ($(date +%T))"
        "${MOFDFT}" train --data "${OUT}/perturbed" --out "${model}" "${visited[@]}" \
            "${train[@]}" "${ARGS[@]}" --json > "${model}_train.json.part"
        mv "${model}_train.json.part" "${model}_train.json"
    fi
    diag="${OUT}/$(basename "${model}" _model)_diagnose_precond-lbfgs.json"
    [ -f "${diag}" ] || "${MOFDFT}" diagnose "${model}" --data "${OUT}/plain" --n 4 --steps 300 \
        --optimizer precond-lbfgs --out "${diag}"
    prev="${model}"
done
