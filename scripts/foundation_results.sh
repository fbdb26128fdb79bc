#!/usr/bin/env bash
# Train the foundation issue's reference runs (resumable: rerun to continue) and copy each result into
# docs/results/. Usage: [THREADS=1] [SEED=s] scripts/foundation_results.sh [dataset/model ...]  (default: all four)
# SEED (default 0) sets train.seed; a seed other than 0 lands in docs/results/<dataset>_<model>_<protocol>_seed<s>.json.
# Two runs sharing the 2 cores should each use THREADS=1: two 2-thread torch processes thrash (5x slower).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=("${@:-ml-1m/sasrec ml-1m/gru4rec beauty/sasrec ml-1m/din}")
mkdir -p docs/results
for run in ${runs[@]}; do
    dataset="${run%/*}"; model="${run#*/}"
    protocol=$([ "$model" = din ] && echo sampled || echo full)
    seed="${SEED:-0}"
    out="runs/${dataset}-${model}-seed${seed}"   # the configs' default run directory for this seed
    .venv/bin/dynrec train --config "configs/${run}.yaml" --set "train.threads=${THREADS:-0}" \
        --set "train.seed=${seed}" --no-progress >> "${out}.log" 2>&1
    suffix=$([ "$seed" = 0 ] && echo "" || echo "_seed${seed}")
    cp "${out}/result.json" "docs/results/${dataset}_${model}_${protocol}${suffix}.json"
done
