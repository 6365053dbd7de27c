#!/usr/bin/env bash
# The ablation behind PreSa's defaults (docs/method.md, "Defaults"): BallRun-mini, κ = 20, seed 0,
# study preset, each variant one change from the defaults (the defaults of the time: no preference gate,
# fp32, independent safety draws, pinned below). From the repository root; two runs at a
# time, one torch thread each. Then: .venv/bin/python results/ablation-v3/table.py
set -uo pipefail
OUT=results/ablation-v3
STORE=$OUT/stores/BallRun-mini.zarr
[ -d "$STORE" ] || .venv/bin/feedbackgen make --task BallRun-mini --noise 0.1 --seed 0 --out "$STORE"
variants=(
  "default"
  "eta0.25 --set eta=0.25"
  "one-slope-1 --set beta_safe=none"
  "one-slope-5 --set beta_safe=none --set beta_s=5"
  "dual-ascent --set nu_rule=sgd --set nu_lr=0.03"
  "rho0.25 --set delta_fraction=0.25"
  "zref-ema --set zref_mode=ema"
  "gaussian --set policy=gaussian"
)
run() {
  local name=$1; shift
  local dir=$OUT/runs/$name
  [ -f "$dir/eval/eval-seed0-n20.json" ] && return 0
  rm -rf "$dir"
  .venv/bin/presa train --data "$STORE" --threshold 20 --seed 0 --preset study --out "$dir" --no-progress \
    --set pref_gate=none --set precision=fp32 --set safety_draw=independent "$@" \
    > /dev/null && .venv/bin/presa eval "$dir" --episodes 20 --seed 0 --workers 1 > /dev/null
}
export -f run; export OUT STORE
printf '%s\n' "${variants[@]}" | xargs -P 2 -L 1 bash -c 'run "$@"' _
# a δ above the ceiling is refused with one error line (kept as evidence)
.venv/bin/presa train --data "$STORE" --threshold 20 --seed 0 --preset study --out "$OUT/runs/delta0.99" \
  --set delta=0.99 --no-progress 2> "$OUT/delta0.99.txt" >/dev/null; rm -rf "$OUT/runs/delta0.99"
