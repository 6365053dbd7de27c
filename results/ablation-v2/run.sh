#!/usr/bin/env bash
# The PreSa ablations (issue 8), from the repository root; each sweep resumes when rerun.
set -euo pipefail
for g in options noise segment-h10 segment-h40 zref; do
  .venv/bin/presa sweep results/ablation-v2/$g.yaml --no-report "$@"
done
.venv/bin/presa report results/ablation-v2 --out results/ablation-v2
