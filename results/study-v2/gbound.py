"""Upper bound of g_θ reachable with z_ref ≥ 0 (results/study-v2/README.md).

With the deterministic policy (log π(a|s) = −‖μ(s) − a‖²) a safe segment's score cannot exceed
S_max = α·Σγ^t‖μ_ref − a‖² (reached when π_θ reproduces its actions exactly). With every unsafe
segment at v = 1, the best g_θ is (mean over safe segments of sigmoid(β_s·S_max) + η) / (1 + η).

Usage (a PreSa run directory with its final checkpoint, its store, the threshold)::

    .venv/bin/python results/study-v2/gbound.py \\
        results/study-v2/runs/BallRun-mini-noise0.1-seed0-presa-k20-s0 \\
        results/study-v2/stores/BallRun-mini-noise0.1-seed0.zarr 20
"""

import sys

import torch

from presa.data import TrainingData
from presa.policy import build_policy


def load(ck: dict, weights: dict) -> torch.nn.Module:
    pi = build_policy(ck["policy_kind"], **ck["policy_kwargs"])
    pi.load_state_dict(weights)
    return pi.eval()


def main(run: str, store: str, kappa: float) -> None:
    ck = torch.load(f"{run}/checkpoints/final.pt", weights_only=False)
    cfg = ck["config"]
    d = TrainingData.from_store(store, threshold=kappa, gamma=cfg["gamma"])
    ref, cur = load(ck, ck["algo_state"]["reference"]), load(ck, ck["policy"])
    with torch.no_grad():
        res_ref = ((ref.mean_action(d.obs) - d.actions) ** 2).sum(-1)
        res_cur = ((cur.mean_action(d.obs) - d.actions) ** 2).sum(-1)
    rows, w = d.seg_index[d.safety_segment], d.seg_weight[d.safety_segment]
    s_max = cfg["alpha"] * (res_ref[rows] * w).sum(-1)
    s_end = cfg["alpha"] * ((res_ref[rows] - res_cur[rows]) * w).sum(-1)
    safe, eta = d.safety_label > 0.5, cfg["eta"]
    print(f"κ={kappa:g}: {int(safe.sum())} of {len(safe)} safety segments safe; α={cfg['alpha']} η={eta}")
    print(f"S_max over safe segments: mean {s_max[safe].mean():.3f}, median {s_max[safe].median():.3f}, "
          f"p90 {s_max[safe].quantile(0.9):.3f}")
    for beta in (1, 5, 20, 100):
        v_safe = torch.sigmoid(beta * s_max[safe]).mean().item()
        print(f"β_s={beta:>3}: best mean v_safe {v_safe:.3f} -> g_max {(v_safe + eta) / (1 + eta):.3f}")
    print(f"end of training: S safe mean {s_end[safe].mean():.3f}, S unsafe mean {s_end[~safe].mean():.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
