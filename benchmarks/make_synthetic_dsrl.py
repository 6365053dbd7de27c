"""Write a synthetic DSRL-format HDF5 file of DSRL's largest size class, in chunks.

The default mimics ``SafetyCarPush2Gymnasium`` (the largest DSRL file: 4,407 trajectories of
1,000 steps, observation dim 88) at half its length: 2,200 episodes × 1,000 steps = 2.2M
transitions, obs 88, act 2, about 1.6 GB. Episodes end with a timeout; each episode has its own
per-step cost rate (episode costs spread over 0..200, so the 20/40/80 thresholds split them) and
reward that rises with cost. The name carries the trajectory count, as DSRL's names do.

Memory stays at one chunk (``--chunk`` rows) however large the file.

Usage::

    python benchmarks/make_synthetic_dsrl.py OUT_DIR [--episodes 2200] [--steps 1000] [--obs-dim 88]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np


def write_synthetic(out_dir: Path, *, episodes: int = 2200, steps: int = 1000, obs_dim: int = 88,
                    act_dim: int = 2, chunk: int = 100_000, seed: int = 0) -> Path:
    """Write ``SafetySyntheticGymnasium-v0-200-<episodes>.hdf5`` into ``out_dir``; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"SafetySyntheticGymnasium-v0-200-{episodes}.hdf5"
    tmp = path.with_name(path.name + ".tmp")
    n = episodes * steps
    rng = np.random.default_rng(seed)
    cost_rate = rng.uniform(0.0, 0.2, size=episodes)  # episode cost ≈ 0..200
    with h5py.File(tmp, "w") as f:
        d = {
            "observations": f.create_dataset("observations", (n, obs_dim), "float32"),
            "next_observations": f.create_dataset("next_observations", (n, obs_dim), "float32"),
            "actions": f.create_dataset("actions", (n, act_dim), "float32"),
            "rewards": f.create_dataset("rewards", (n,), "float32"),
            "costs": f.create_dataset("costs", (n,), "float32"),
            "terminals": f.create_dataset("terminals", (n,), "bool"),
            "timeouts": f.create_dataset("timeouts", (n,), "bool"),
        }
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            rows = hi - lo
            step = np.arange(lo, hi)
            ep = step // steps
            obs = rng.normal(size=(rows + 1, obs_dim)).astype(np.float32)
            d["observations"][lo:hi] = obs[:-1]
            d["next_observations"][lo:hi] = obs[1:]
            d["actions"][lo:hi] = rng.uniform(-1, 1, size=(rows, act_dim)).astype(np.float32)
            costs = (rng.random(rows) < cost_rate[ep]).astype(np.float32)
            d["costs"][lo:hi] = costs
            d["rewards"][lo:hi] = (1.0 + 5.0 * cost_rate[ep] + 0.5 * rng.normal(size=rows)).astype(np.float32)
            d["terminals"][lo:hi] = False
            d["timeouts"][lo:hi] = (step % steps) == steps - 1
    tmp.replace(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--episodes", type=int, default=2200)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--obs-dim", type=int, default=88)
    ap.add_argument("--act-dim", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    path = write_synthetic(args.out_dir, episodes=args.episodes, steps=args.steps, obs_dim=args.obs_dim,
                           act_dim=args.act_dim, seed=args.seed)
    size = path.stat().st_size / 2**30
    print(f"wrote {path} ({args.episodes * args.steps:,} transitions, {size:.2f} GiB) "
          f"in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
