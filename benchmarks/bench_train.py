"""Training-step speed of ``presa train`` for the default Bullet config (not a test).

Measures, on a synthetic in-memory store shaped like a Bullet task (8-dim observations, 2-dim
actions, segments of 20 steps, 96 pairs + 96 safety segments per step, 256-256 MLP, dropout 0.25):

- ``naive``: a plain PyTorch loop with the same math — reference log-probs recomputed every step
  by a second network, one forward pass per table (a, b, safety), ``F.dropout`` (global RNG);
- ``presa``: the trainer's alignment step (``PreSa.update``): cached reference log-probs, one
  forward pass over the union of the step's segments, generator-driven byte-mask dropout;
- variants of the presa step: float-uniform dropout mask, ``F.dropout``-style mask, no dropout,
  bf16 autocast, 1 vs 2 threads;
- the BC step; then a short ``torch.profiler`` table of where the presa step's time goes.

Each figure is the median ms/step of a timed window, best of ``--repeats`` windows (the machine is
shared, so the best window is the least disturbed one).

Usage::

    .venv/bin/python benchmarks/bench_train.py            # CPU (and CUDA when present)
    .venv/bin/python benchmarks/bench_train.py --steps 30 --repeats 3 --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

import presa.policy as policy_mod
from feedbackgen.store import FeedbackData
from presa import losses
from presa.algos import get_algorithm
from presa.config import resolve_config
from presa.data import TrainingData


def synthetic_store(n_episodes: int = 300, t_max: int = 500, h: int = 20, n_seg: int = 6000,
                    n_pairs: int = 3000, obs_dim: int = 8, act_dim: int = 2, seed: int = 0) -> FeedbackData:
    """A Bullet-shaped store in memory (150k transitions)."""
    rng = np.random.default_rng(seed)
    n = n_episodes * t_max
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = np.tanh(rng.normal(size=(n, act_dim))).astype(np.float32)
    ep = rng.integers(0, n_episodes, n_seg)
    start = (ep * t_max + rng.integers(0, t_max - h + 1, n_seg)).astype(np.int64)
    a = rng.integers(0, n_seg, n_pairs)
    b = rng.integers(0, n_seg, n_pairs)
    return FeedbackData(
        observations=obs, next_observations=obs, actions=act,
        episode=np.repeat(np.arange(n_episodes, dtype=np.int32), t_max), terminations=np.zeros(n, bool),
        truncations=np.zeros(n, bool), episode_start=np.arange(n_episodes) * t_max,
        episode_length=np.full(n_episodes, t_max), segment_episode=ep.astype(np.int32), segment_start=start,
        segment_length=np.full(n_seg, h, np.int32), pref_a=a, pref_b=b,
        pref_label=rng.integers(0, 2, n_pairs).astype(np.float32),
        pref_prob=np.full(n_pairs, np.nan, np.float32),
        thresholds=np.array([10.0, 20.0, 40.0], np.float32), safety_segment=np.arange(n_seg),
        safety_label=rng.integers(0, 2, (n_seg, 3)).astype(np.int8), oracle=None,
        metadata={"obs_mean": [0.0] * obs_dim, "obs_std": [1.0] * obs_dim}, store_id="bench/synthetic-v0")


def time_steps(step: Callable[[], object], steps: int, repeats: int, sync: Callable[[], None]
               ) -> tuple[float, float]:
    """(wall, CPU) ms per call: best-of-repeats median wall time, best-of-repeats mean process CPU
    time (all threads; on a shared machine the CPU time is the steadier figure)."""
    for _ in range(3):
        step()
    sync()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        times = []
        c0 = time.process_time()
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
        best_cpu = min(best_cpu, (time.process_time() - c0) / steps * 1e3)
        best = min(best, statistics.median(times) * 1e3)
    return best, best_cpu


def make_presa(data: TrainingData, device: str, **over):
    cfg = resolve_config(suite="bullet", overrides={"threshold": 20.0, "device": device, "bc_steps": 0,
                                                     "warmup_steps": 0, **over})
    gen = torch.Generator(device=device).manual_seed(0)
    algo = get_algorithm("presa")(cfg, data, gen)
    algo.make_reference()
    return algo, cfg


def naive_step_fn(data: TrainingData, cfg, device: str) -> Callable[[], None]:
    """A plain PyTorch loop with the same math: no cache, three forward passes, F.dropout."""
    torch.manual_seed(0)
    dims = (data.obs_dim, *cfg.hidden, data.act_dim)

    def mlp() -> torch.nn.Module:
        layers: list[torch.nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(torch.nn.Linear(a, b))
            if i < len(dims) - 2:
                layers += [torch.nn.ReLU(), torch.nn.Dropout(cfg.dropout)]
        return torch.nn.Sequential(*layers, torch.nn.Tanh()).to(device)

    pi, ref = mlp(), mlp().eval()
    opt = torch.optim.Adam(pi.parameters(), lr=1e-5)
    state = {"nu": torch.tensor(1.0, device=device), "z": torch.tensor(0.0, device=device)}
    g = torch.Generator(device=device).manual_seed(0)

    def score(segs: torch.Tensor) -> torch.Tensor:
        rows = data.seg_index[segs]
        obs, act = data.obs[rows], data.actions[rows]
        lp = -(pi(obs) - act).square().sum(-1)
        with torch.no_grad():
            lr = -(ref(obs) - act).square().sum(-1)
        return cfg.alpha * ((lp - lr) * data.seg_weight[segs]).sum(-1)

    def step() -> None:
        p = torch.randint(data.n_pairs, (cfg.pair_batch,), generator=g, device=device)
        s = torch.randint(data.n_safety, (cfg.safety_batch,), generator=g, device=device)
        s_a, s_b, s_s = score(data.pref_a[p]), score(data.pref_b[p]), score(data.safety_segment[s])
        safe = data.safety_label[s]
        state["z"] = losses.zref_update("ema", state["z"], s_s, cfg.zref_momentum)
        gv = losses.safety_alignment(s_s, safe, state["z"], cfg.beta_s, cfg.eta)
        loss = losses.lagrangian(losses.preference_loss(s_a, s_b, data.pref_label[p], 1.0), gv, state["nu"],
                                 cfg.delta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["nu"] = losses.dual_update_sgd(state["nu"], gv, cfg.delta, cfg.nu_lr, cfg.nu_max)

    return step


def where_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """The first implementation: byte mask as bool, ``torch.where``."""
    bits = torch.empty(x.numel() // 8, dtype=torch.int64, device=x.device).random_(-(2**63), None,
                                                                                generator=generator)
    keep = bits.view(torch.uint8).view(x.shape) >= int(p * 256)
    return torch.where(keep, x * (1.0 / (1.0 - p)), x.new_zeros(()))


def float_mask_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """One uniform float per unit."""
    u = torch.empty(x.shape, dtype=torch.float32, device=x.device).uniform_(generator=generator)
    return x * (u >= p).to(x.dtype).mul_(1.0 / (1.0 - p))


def bernoulli_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """``Tensor.bernoulli_`` mask."""
    mask = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * mask.mul_(1.0 / (1.0 - p))


def run(device: str, steps: int, repeats: int, threads: list[int], profile: bool) -> None:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    data = TrainingData.from_feedback(synthetic_store(), threshold=20.0, gamma=0.99, device=device)
    rows = 2 * 96 * 20 + 96 * 20
    print(f"\n== device {device} ({torch.cuda.get_device_name() if device.startswith('cuda') else 'CPU'}); "
          f"torch {torch.__version__}; {data.n_transitions} transitions; one step = {rows} rows "
          f"(96 pairs + 96 safety segments × 20 steps), 8 → 256 → 256 → 2 MLP")
    for th in threads if device == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(th)
        results: dict[str, tuple[float, float]] = {}

        def timed(fn: Callable[[], object]) -> tuple[float, float]:
            return time_steps(fn, steps, repeats, sync)

        algo, cfg = make_presa(data, device)
        results["naive loop (F.dropout, no ref cache, 3 passes)"] = timed(naive_step_fn(data, cfg, device))
        results["presa step (default: byte mask × x)"] = timed(partial(algo.update, 0))
        original = policy_mod.dropout
        try:
            for name, fn in (("byte mask + where", where_dropout), ("float-uniform mask", float_mask_dropout),
                             ("bernoulli_ mask", bernoulli_dropout)):
                policy_mod.dropout = fn
                results[f"presa step, {name}"] = timed(partial(algo.update, 0))
        finally:
            policy_mod.dropout = original
        results["presa step, dropout 0"] = timed(partial(make_presa(data, device, dropout=0.0)[0].update, 0))
        bf16 = make_presa(data, device, precision="bf16")[0]
        results["presa step, bf16 autocast"] = timed(partial(bf16.update, 0))
        bc = make_presa(data, device, bc_steps=10**6, total_steps=10**6)[0]
        results["BC step (1024 transitions)"] = timed(partial(bc.update, 0))
        print(f"\n-- threads {torch.get_num_threads()}")
        base = results["naive loop (F.dropout, no ref cache, 3 passes)"]
        print(f"{'':<50} {'wall ms':>8} {'steps/s':>8} {'vs naive':>8}   {'CPU ms':>8} {'vs naive':>8}")
        for name, (ms, cpu) in results.items():
            print(f"{name:<50} {ms:8.2f} {1e3 / ms:8.1f} {base[0] / ms:7.2f}×   "
                  f"{cpu:8.2f} {base[1] / cpu:7.2f}×")
        presa_ms = results["presa step (default: byte mask × x)"][0]
        bc_ms = results["BC step (1024 transitions)"][0]
        full = 30_000 * bc_ms / 1e3 + 70_000 * presa_ms / 1e3
        print(f"full Bullet preset (30k BC + 70k alignment steps) ≈ {full / 60:.1f} min of step time")
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        algo, _ = make_presa(data, device)
        for _ in range(3):
            algo.update(0)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
        with prof(activities=acts) as p:
            for _ in range(10):
                algo.update(0)
            sync()
        key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
        print(f"\n-- torch.profiler, 10 presa steps, top ops by self time "
              f"(threads {torch.get_num_threads()})")
        print(p.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=40))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per window")
    ap.add_argument("--repeats", type=int, default=3, help="windows; the best median is reported")
    ap.add_argument("--device", default=None, help="cpu, cuda, or both when omitted (cuda if present)")
    ap.add_argument("--threads", default="1,2", help="CPU thread counts to compare")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    threads = [int(x) for x in args.threads.split(",")]
    for dev in devices:
        run(dev, args.steps, args.repeats, threads, not args.no_profile)


if __name__ == "__main__":
    main()
