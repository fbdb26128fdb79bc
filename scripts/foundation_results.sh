#!/usr/bin/env bash
# Train the foundation issue's reference runs (resumable: rerun to continue) and copy each result into
# docs/results/. Usage: scripts/foundation_results.sh [dataset/model ...]  (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=("${@:-ml-1m/sasrec ml-1m/gru4rec beauty/sasrec ml-1m/din}")
mkdir -p docs/results
for run in ${runs[@]}; do
    dataset="${run%/*}"; model="${run#*/}"
    protocol=$([ "$model" = din ] && echo sampled || echo full)
    out="runs/${dataset}-${model}-seed0"   # the configs' default run directory
    .venv/bin/dynrec train --config "configs/${run}.yaml" --no-progress >> "${out}.log" 2>&1
    cp "${out}/result.json" "docs/results/${dataset}_${model}_${protocol}.json"
done
