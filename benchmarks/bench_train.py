"""Training-step speed of ``presa train`` for the default Bullet config (not a test).

Measures, on a synthetic in-memory store shaped like a Bullet store made by ``feedbackgen make``
(8-dim observations, 2-dim actions, segments of 20 steps; safety segments are the pairs' first
segments, one safety row per pair), at the default batch (96 pairs + 96 safety segments per
alignment step, 1,024 transitions per BC step, 8 → 256 → 256 → 2 MLP, dropout 0.25 in BC as the
method uses it, none in alignment):

- ``plain``: a plain PyTorch loop with the same math — an ``nn.Sequential`` policy, the reference
  policy's log-probs recomputed every step by a second network, one forward pass per table (a, b,
  safety), ``torch.optim.Adam`` defaults; ``nn.Dropout`` in BC. A second plain alignment loop
  with ``F.dropout`` in alignment too is the reference of the earlier figures in
  benchmarks/README.md (the method stopped using dropout in alignment since);
- the trainer's steps (``PreSa.update``) in fp32 and with ``precision=auto`` (bf16 where the CPU
  computes it natively), the alignment step also with ``safety_draw=independent`` (every one of
  the 288 segments through the network) and, with ``--variants``, explicit bf16 and a float-
  uniform / ``bernoulli_`` dropout mask in BC;
- the full default preset (30k BC + 70k alignment steps) from those per-step times;
- a short ``torch.profiler`` table of the ``auto`` alignment step.

All variants of a thread count are timed in the same windows, round-robin (the machine is shared:
ratios are only compared within one run); each figure is the best window's median ms/step, and
the best window's mean CPU ms/step of this thread. CUDA figures are added when a GPU is present.

Usage::

    .venv/bin/python benchmarks/bench_train.py                    # 1 thread; CPU (and CUDA when present)
    .venv/bin/python benchmarks/bench_train.py --steps 20 --repeats 5 --threads 1,2 --variants
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import nn

import presa.policy as policy_mod
from feedbackgen.store import FeedbackData
from presa import losses
from presa.algos import get_algorithm
from presa.config import resolve_config
from presa.data import TrainingData
from presa.precision import resolve_precision


def synthetic_store(n_pairs: int = 3000, n_episodes: int = 300, t_max: int = 500, h: int = 20,
                    obs_dim: int = 8, act_dim: int = 2, seed: int = 0) -> FeedbackData:
    """A Bullet-shaped store in memory (150k transitions), laid out as ``feedbackgen make`` lays it
    out by default: segments 0..P-1 are the pairs' first segments, P..2P-1 their second, and the
    safety rows are the first segments (one per pair)."""
    rng = np.random.default_rng(seed)
    n = n_episodes * t_max
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = np.tanh(rng.normal(size=(n, act_dim))).astype(np.float32)
    n_seg = 2 * n_pairs
    ep = rng.integers(0, n_episodes, n_seg)
    start = (ep * t_max + rng.integers(0, t_max - h + 1, n_seg)).astype(np.int64)
    return FeedbackData(
        observations=obs, next_observations=obs, actions=act,
        episode=np.repeat(np.arange(n_episodes, dtype=np.int32), t_max), terminations=np.zeros(n, bool),
        truncations=np.zeros(n, bool), episode_start=np.arange(n_episodes) * t_max,
        episode_length=np.full(n_episodes, t_max), segment_episode=ep.astype(np.int32), segment_start=start,
        segment_length=np.full(n_seg, h, np.int32), pref_a=np.arange(n_pairs),
        pref_b=np.arange(n_pairs, n_seg),
        pref_label=rng.integers(0, 2, n_pairs).astype(np.float32),
        pref_prob=np.full(n_pairs, np.nan, np.float32),
        thresholds=np.array([10.0, 20.0, 40.0], np.float32), safety_segment=np.arange(n_pairs),
        safety_label=rng.integers(0, 2, (n_pairs, 3)).astype(np.int8), oracle=None,
        metadata={"obs_mean": [0.0] * obs_dim, "obs_std": [1.0] * obs_dim}, store_id="bench/synthetic-v1")


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{name}; {os.cpu_count()} logical CPUs; load average {load}; torch {torch.__version__} "
            f"(CPU capability {torch.backends.cpu.get_cpu_capability()})")


def make_algo(data: TrainingData, device: str, **over):
    cfg = resolve_config(suite="bullet", overrides={"threshold": 20.0, "device": device, "bc_steps": 0,
                                                     "warmup_steps": 0, **over})
    gen = torch.Generator(device=device).manual_seed(0)
    algo = get_algorithm("presa")(cfg, data, gen)
    if cfg.bc_steps == 0:
        algo.make_reference()
    return algo, cfg


def bc_algo(data: TrainingData, device: str, **over):
    return make_algo(data, device, bc_steps=10**6, total_steps=10**6, **over)[0]


def _mlp(dims: tuple[int, ...], p: float, device: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.ReLU(), nn.Dropout(p)]
    return nn.Sequential(*layers).to(device)


def plain_align_fn(data: TrainingData, ref_algo, device: str, dropout_in_align: bool) -> Callable[[], None]:
    """The method's alignment step as a plain PyTorch loop: the reference recomputed every step, one
    forward pass per table (a, b, safety), calibrated scores, PreSa's losses and PID dual; dropout
    off (the method) or on (``dropout_in_align``, the earlier benchmark's reference)."""
    cfg = ref_algo.cfg
    torch.manual_seed(0)
    pi = _mlp((data.obs_dim, *cfg.hidden, data.act_dim), cfg.dropout, device)
    ref = copy.deepcopy(pi).eval()
    pi.train(dropout_in_align)
    opt = torch.optim.Adam(pi.parameters(), lr=cfg.align_lr)
    var, delta = ref_algo.action_var, ref_algo.delta_target
    state = {"nu": torch.tensor(cfg.nu_init, device=device), "i": torch.tensor(cfg.nu_init, device=device)}
    g = torch.Generator(device=device).manual_seed(0)

    def score(segs: torch.Tensor) -> torch.Tensor:
        rows = data.seg_index[segs]
        obs, act = data.obs[rows], data.actions[rows]
        lp = -((torch.tanh(pi(obs)) - act).square() / (2 * var)).sum(-1)
        with torch.no_grad():
            lr = -((torch.tanh(ref(obs)) - act).square() / (2 * var)).sum(-1)
        return cfg.alpha * ((lp - lr) * data.seg_weight[segs]).sum(-1)

    def step() -> None:
        p = torch.randint(data.n_pairs, (cfg.pair_batch,), generator=g, device=device)
        s = torch.randint(data.n_safety, (cfg.safety_batch,), generator=g, device=device)
        s_a, s_b, s_s = score(data.pref_a[p]), score(data.pref_b[p]), score(data.safety_segment[s])
        gv = losses.safety_alignment(s_s, data.safety_label[s], 0.0, cfg.beta_s, cfg.eta, cfg.beta_safe)
        pref = losses.preference_loss(s_a, s_b, data.pref_label[p], cfg.lambda_cb)
        loss = losses.lagrangian(pref, gv, state["nu"], delta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["nu"], state["i"], _ = losses.dual_update_pid(state["i"], None, gv, delta, cfg.nu_lr,
                                                            cfg.pid_kp, cfg.pid_kd, cfg.nu_max)

    return step


def plain_bc_fn(data: TrainingData, cfg, device: str) -> Callable[[], None]:
    """Behaviour cloning as a plain loop: ``nn.Dropout`` (global RNG), ``torch.optim.Adam``."""
    torch.manual_seed(0)
    pi = _mlp((data.obs_dim, *cfg.hidden, data.act_dim), cfg.dropout, device).train()
    opt = torch.optim.Adam(pi.parameters(), lr=cfg.lr)
    g = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        i = torch.randint(data.n_transitions, (cfg.bc_batch,), generator=g, device=device)
        loss = (torch.tanh(pi(data.obs[i])) - data.actions[i]).square().sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def float_mask(shape, p, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """One uniform float per unit."""
    u = torch.empty(shape, dtype=torch.float32, device=device).uniform_(generator=generator)
    return (u >= p).to(dtype).mul_(1.0 / (1.0 - p))


def bernoulli_mask(shape, p, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """``Tensor.bernoulli_`` into a fresh buffer."""
    return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1.0 - p, generator=generator).mul_(
        1.0 / (1.0 - p))


class _Masked:
    """A BC step with ``presa.policy.dropout_mask`` replaced for the duration of each call."""

    def __init__(self, step: Callable[[], object], mask: Callable[..., torch.Tensor]) -> None:
        self.step, self.mask = step, mask

    def __call__(self) -> None:
        original = policy_mod.dropout_mask
        policy_mod.dropout_mask = self.mask
        try:
            self.step()
        finally:
            policy_mod.dropout_mask = original


def time_round_robin(fns: dict[str, Callable[[], object]], steps: int, repeats: int,
                     sync: Callable[[], None], warmup: int = 10) -> dict[str, tuple[float, float]]:
    """{name: (wall ms, CPU ms)} per call: the best window's median wall time and the best window's
    mean CPU time of this thread; every window times every variant, in turn. ``warmup`` calls
    first (oneDNN compiles a bf16 kernel for each new batch shape: the number of distinct segments
    varies a little from step to step)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    walls: dict[str, list[float]] = {k: [] for k in fns}
    cpus: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times = []
            c0 = time.thread_time()
            for _ in range(steps):
                t0 = time.perf_counter()
                fn()
                sync()
                times.append(time.perf_counter() - t0)
            cpus[name].append((time.thread_time() - c0) / steps * 1e3)
            walls[name].append(statistics.median(times) * 1e3)
    return {k: (min(walls[k]), min(cpus[k])) for k in fns}


def full_preset(res: dict[str, tuple[float, float]], align: str, bc: str) -> tuple[float, float]:
    """(wall s, CPU s) of the full Bullet preset's steps: 30k BC steps and 70k alignment steps."""
    return tuple((30_000 * res[bc][k] + 70_000 * res[align][k]) / 1e3 for k in (0, 1))  # type: ignore


def run(device: str, steps: int, repeats: int, threads: list[int], profile: bool, variants: bool) -> None:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    data = TrainingData.from_feedback(synthetic_store(), threshold=20.0, gamma=0.99, device=device)
    auto = resolve_precision("auto", device)
    where = torch.cuda.get_device_name() if device.startswith("cuda") else machine()
    print(f"\n== device {device}: {where}")
    print(f"   {data.n_transitions} transitions; alignment step = 96 pairs + 96 safety segments × 20 steps "
          f"(5,760 rows; 3,840 distinct when the safety rows are the pairs'), BC step = 1,024 rows; "
          f"8 → 256 → 256 → 2 MLP; precision auto → {auto.precision} ({auto.reason})")
    for th in threads if device == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(th)
        fp32, cfg = make_algo(data, device, precision="fp32")
        fns: dict[str, Callable[[], object]] = {
            "plain loop, alignment (the method: no dropout)": plain_align_fn(data, fp32, device, False),
            "plain loop, alignment with F.dropout (earlier ref.)": plain_align_fn(data, fp32, device, True),
            "trainer alignment, fp32, safety drawn independently":
                partial(make_algo(data, device, precision="fp32", safety_draw="independent")[0].update, 0),
            "trainer alignment, fp32": partial(fp32.update, 0),
            f"trainer alignment, auto ({auto.precision})": partial(make_algo(data, device)[0].update, 0),
        }
        if variants and auto.precision != "bf16":
            fns["trainer alignment, bf16 (emulated here)"] = partial(
                make_algo(data, device, precision="bf16")[0].update, 0)
        fns["plain loop, BC (nn.Dropout)"] = plain_bc_fn(data, cfg, device)
        fns["trainer BC, fp32"] = partial(bc_algo(data, device, precision="fp32").update, 0)
        fns[f"trainer BC, auto ({auto.precision})"] = partial(bc_algo(data, device).update, 0)
        if variants:
            fns["trainer BC, fp32, float-uniform mask"] = _Masked(
                partial(bc_algo(data, device, precision="fp32").update, 0), float_mask)
            fns["trainer BC, fp32, bernoulli_ mask"] = _Masked(
                partial(bc_algo(data, device, precision="fp32").update, 0), bernoulli_mask)
            no_dropout = bc_algo(data, device, precision="fp32", dropout=0.0)
            fns["trainer BC, fp32, no dropout"] = partial(no_dropout.update, 0)
        res = time_round_robin(fns, steps, repeats, sync)
        print(f"\n-- threads {torch.get_num_threads()}; {steps} steps × {repeats} windows; load average now "
              f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'':<54} {'wall ms':>8} {'× plain':>8}   {'CPU ms':>8} {'× plain':>8}")
        for name, (ms, cpu) in res.items():
            base = res["plain loop, BC (nn.Dropout)" if "BC" in name else
                       "plain loop, alignment (the method: no dropout)"]
            print(f"{name:<54} {ms:8.2f} {base[0] / ms:7.2f}×   {cpu:8.2f} {base[1] / cpu:7.2f}×")
        old = res["plain loop, alignment with F.dropout (earlier ref.)"]
        for label in ("trainer alignment, fp32", f"trainer alignment, auto ({auto.precision})"):
            print(f"{label} against the F.dropout plain loop: {old[0] / res[label][0]:.2f}× wall, "
                  f"{old[1] / res[label][1]:.2f}× CPU")
        print("full Bullet preset (30k BC + 70k alignment steps), step time only:")
        plain = ("plain loop, alignment (the method: no dropout)", "plain loop, BC (nn.Dropout)")
        tag = f"auto ({auto.precision})"
        for label, pair in (("plain loop", plain),
                            ("trainer, fp32", ("trainer alignment, fp32", "trainer BC, fp32")),
                            (f"trainer, {tag}", (f"trainer alignment, {tag}", f"trainer BC, {tag}"))):
            wall, cpu = full_preset(res, *pair)
            print(f"  {label:<24} {wall / 60:6.1f} min  ({full_preset(res, *plain)[0] / wall:.2f}× the plain "
                  f"loop; CPU {full_preset(res, *plain)[1] / cpu:.2f}×)")
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        algo, _ = make_algo(data, device)
        for _ in range(3):
            algo.update(0)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
        with prof(activities=acts) as p:
            for _ in range(10):
                algo.update(0)
            sync()
        key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
        print(f"\n-- torch.profiler, 10 trainer alignment steps (precision auto → {auto.precision}), "
              f"top ops by self time (threads {torch.get_num_threads()})")
        print(p.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=40))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per window")
    ap.add_argument("--repeats", type=int, default=3, help="windows; the best is reported")
    ap.add_argument("--device", default=None, help="cpu, cuda, or both when omitted (cuda if present)")
    ap.add_argument("--threads", default="1", help="CPU thread counts to compare, e.g. 1,2")
    ap.add_argument("--variants", action="store_true", help="also explicit bf16 and other dropout masks")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    threads = [int(x) for x in args.threads.split(",")]
    for dev in devices:
        run(dev, args.steps, args.repeats, threads, not args.no_profile, args.variants)


if __name__ == "__main__":
    main()
