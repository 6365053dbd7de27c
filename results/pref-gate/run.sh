#!/usr/bin/env bash
# PreSa with and without the preference gate (docs/method.md, "Preference gate") on the Bullet
# datasets, κ 10/20/40, study preset, one torch thread per run. From the repository root; every
# invocation resumes. Then: .venv/bin/python results/pref-gate/table.py
# The runs were made before the precision and safety_draw options: fp32 and independently drawn
# safety rows, pinned here so that the landed code reproduces them.
#   GATES  which variants (default: none,safe)     SEEDS  (default: 0)
set -euo pipefail
TASKS=${TASKS:-BallRun-mini,CarRun-mini,BallCircle-mini}
task_args=()
for t in ${TASKS//,/ }; do task_args+=(--task "$t"); done
for gate in $(echo "${GATES:-none,safe}" | tr , ' '); do
  .venv/bin/presa sweep --out "results/pref-gate/$gate" "${task_args[@]}" --noise 0.1 --thresholds 10,20,40 \
    --seeds "${SEEDS:-0}" --methods presa --preset study --set threads=1 --set "pref_gate=$gate" \
    --set precision=fp32 --set safety_draw=independent \
    --threads 1 --episodes 20 --eval-workers 1 --workers "${WORKERS:-1}" --no-report
done
