#!/usr/bin/env bash
# bf16 against fp32 (precision auto): PreSa on BallRun-mini and CarRun-mini, κ = 20, seeds
# 0/10/20, study preset, one torch thread per run, two runs at a time; from the repository root.
# Arms (each an explicit setting, so the study means the same on any machine):
#   fp32-independent  precision=fp32, safety rows drawn on their own: the step as it was before
#                     the safety rows were taken from the pairs (the same arithmetic as before,
#                     up to float rounding where a segment is scored once instead of twice)
#   fp32              precision=fp32, the default safety draw (the pairs' safety rows)
#   bf16              precision=bf16, the default safety draw (what precision=auto picks on a CPU
#                     with AVX-512 BF16 / AMX)
# Every run is evaluated for 20 episodes with evaluation seed 0 (fp32, like every `presa eval`).
# Finished runs are skipped. Then: .venv/bin/python results/precision/table.py
set -uo pipefail
OUT=results/precision
TASKS=${TASKS:-BallRun-mini CarRun-mini}
SEEDS=${SEEDS:-0 10 20}
PY=${PY:-.venv/bin}
jobs=()
for task in $TASKS; do
  store=$OUT/stores/$task.zarr
  [ -d "$store" ] || "$PY/feedbackgen" make --task "$task" --noise 0.1 --seed 0 --out "$store" > /dev/null
  for seed in $SEEDS; do
    jobs+=("$task $seed fp32-independent --set precision=fp32 --set safety_draw=independent")
    jobs+=("$task $seed fp32 --set precision=fp32")
    jobs+=("$task $seed bf16 --set precision=bf16")
  done
done
run() {
  local task=$1 seed=$2 arm=$3; shift 3
  local dir=$OUT/runs/$task-k20-s$seed-$arm
  [ -f "$dir/eval/eval-seed0-n20.json" ] && return 0
  rm -rf "$dir"
  "$PY/presa" train --data "$OUT/stores/$task.zarr" --threshold 20 --seed "$seed" --preset study --out "$dir" \
    --no-progress "$@" > /dev/null && "$PY/presa" eval "$dir" --episodes 20 --seed 0 --workers 1 > /dev/null
}
export -f run; export OUT PY
printf '%s\n' "${jobs[@]}" | xargs -P 2 -L 1 bash -c 'run "$@"' _
