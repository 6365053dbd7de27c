#!/usr/bin/env bash
# The study grid (issue 8) on the shipped datasets (v2 collections of BallRun-mini and CarRun-mini),
# run from the repository root on a 2-core CPU: two cells at a time, one torch thread each. Every
# invocation resumes: finished cells are skipped, interrupted ones continue from their latest
# checkpoint. TASKS, THRESHOLDS and SEEDS choose the slice of the grid; seeds run one after another
# so that a partly finished study is balanced across methods.
set -euo pipefail
TASKS=${TASKS:-BallRun-mini,CarRun-mini}
task_args=()
for t in ${TASKS//,/ }; do task_args+=(--task "$t"); done
THRESHOLDS=${THRESHOLDS:-10,20,40}
SEEDS=${SEEDS:-0,10,20}
METHODS=${METHODS:-presa,bc_all,bc_safe_seg,cpl,two_stage,bc_safe}
for seed in ${SEEDS//,/ }; do
  .venv/bin/presa sweep --out results/study-v2 "${task_args[@]}" --noise 0.1 \
    --thresholds "$THRESHOLDS" --seeds "$seed" --methods "$METHODS" \
    --preset study --set threads=1 --threads 1 --episodes 20 --eval-workers 1 --workers 2 --no-report "$@"
done
.venv/bin/presa report results/study-v2/runs --out results/study-v2
