#!/usr/bin/env bash
# The study grid (issue 8), run from the repository root on a 2-core CPU, one cell at a time, one
# torch thread. Every invocation resumes: finished cells are skipped, interrupted ones continue from
# their latest checkpoint. TASKS, THRESHOLDS and SEEDS choose the slice of the grid to run.
set -euo pipefail
TASKS=${TASKS:-BallRun-mini,CarRun-mini}
task_args=()
for t in ${TASKS//,/ }; do task_args+=(--task "$t"); done
THRESHOLDS=${THRESHOLDS:-10,20,40}
SEEDS=${SEEDS:-0,10,20}
.venv/bin/presa sweep --out results/study-v1 "${task_args[@]}" --noise 0.1 \
  --thresholds "$THRESHOLDS" --seeds "$SEEDS" \
  --methods presa,bc_all,bc_safe_seg,cpl,two_stage,bc_safe \
  --preset study --set threads=1 --threads 1 --episodes 20 --eval-workers 1 --workers 1 "$@"
