#!/usr/bin/env bash
# Study v3 (PreSa with calibrated scores and a ceiling-derived δ, docs/method.md) on the shipped
# datasets, from the repository root on a 2-core CPU: two cells at a time, one torch thread each.
# Every invocation resumes (finished cells are skipped). Stores get the default 10 % validation
# split, so every run logs held-out metrics (val/...). Waves, in the order they were run:
#   WAVE=presa      PreSa, 3 seeds
#   WAVE=peers      BC-Safe-Seg, BC-Safe (oracle), binary alignment, TraC (oracle), seed 0
#   WAVE=others     BC-All, CPL, safety-only, seed 0
#   WAVE=peer-seeds the peers on seeds 10 and 20
# TASKS / THRESHOLDS choose the slice. The study predates the preference gate, the precision option
# and paired safety draws: the --set pins reproduce it with today's code.
set -euo pipefail
TASKS=${TASKS:-BallRun-mini,CarRun-mini,BallCircle-mini}
task_args=()
for t in ${TASKS//,/ }; do task_args+=(--task "$t"); done
THRESHOLDS=${THRESHOLDS:-10,20,40}
case "${WAVE:-presa}" in
  presa) METHODS=presa; SEEDS=0,10,20 ;;
  peers) METHODS=bc_safe_seg,bc_safe,binary,trac; SEEDS=0 ;;
  others) METHODS=bc_all,cpl,safety_only; SEEDS=0 ;;
  peer-seeds) METHODS=bc_safe_seg,bc_safe,binary,trac; SEEDS=10,20 ;;
  *) echo "unknown WAVE ${WAVE}" >&2; exit 2 ;;
esac
for seed in ${SEEDS//,/ }; do
  .venv/bin/presa sweep --out results/study-v3 "${task_args[@]}" --noise 0.1 \
    --thresholds "$THRESHOLDS" --seeds "$seed" --methods "$METHODS" \
    --preset study --set threads=1 \
    --set pref_gate=none --set precision=fp32 --set safety_draw=independent --threads 1 --episodes 20 --eval-workers 1 --workers 2 --no-report "$@"
done
