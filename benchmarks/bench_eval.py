"""Environment steps per second of ``presa eval`` against stepping the raw simulator (not a test).

Measured on one task (default BallRun, bullet-safety-gym) with a real checkpoint (the default
256-256 policy, trained for a handful of steps on a synthetic store unless ``--run`` is given):

- ``raw random``: ``gymnasium.make(env_id)`` stepped with random actions in a plain loop, one
  process — the simulator's own speed;
- ``raw + policy``: the same plain loop, the action from the checkpoint's ``Actor`` (one torch
  thread) — the work the evaluator does, without any of its machinery;
- ``evaluator, N workers (cold)``: a new ``Evaluator`` per call — worker processes are forked,
  load the checkpoint and open their environments (the fork server, which imports torch once, is
  already running after the first call in a process);
- ``evaluator, N workers (warm)``: a second ``Evaluator.evaluate`` on the same pool (the case of
  ``presa train --eval-every``);
- ``presa eval CLI, fresh process``: ``presa eval RUN --episodes E --workers 2 --json`` as a
  subprocess, end to end (interpreter start, fork server start with its torch import, workers).

Each figure is the best of ``--repeats`` (the machine is shared; the best run is the least
disturbed one). Usage::

    .venv/bin/python benchmarks/bench_eval.py [--task BallRun] [--episodes 20] [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_run(root: Path, task: str, seed: int = 0) -> Path:
    """A real run of ``task`` (default policy size) trained briefly on a synthetic DSRL-layout store."""
    from feedbackgen.make import MakeConfig, make_store
    from feedbackgen.sim import make_env
    from feedbackgen.sources import Trajectories, write_dsrl
    from feedbackgen.tasks import get_task
    from presa.config import resolve_config
    from presa.trainer import train

    t = get_task(task)
    env = make_env(t)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    rng = np.random.default_rng(seed)
    n_ep, t_len = 6, t.max_episode_steps
    n = n_ep * t_len
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    trunc = np.zeros(n, bool)
    trunc[t_len - 1::t_len] = True
    traj = Trajectories(observations=obs, next_observations=np.roll(obs, -1, 0), actions=act,
                        rewards=(1.0 + act[:, 0]).astype(np.float32),
                        costs=(act[:, -1] > 0.5).astype(np.float32),
                        terminations=np.zeros(n, bool), truncations=trunc,
                        episode_start=np.arange(n_ep, dtype=np.int64) * t_len,
                        episode_length=np.full(n_ep, t_len, dtype=np.int64))
    src = write_dsrl(root / "source.hdf5", traj)
    store = make_store(MakeConfig(task=task, source=src, out=root / "store.zarr", n_pairs=100, n_safety=100,
                                  seed=seed, download=False))
    cfg = resolve_config(suite=t.suite, preset="quick",
                         overrides={"threshold": t.thresholds[0], "seed": seed, "total_steps": 30,
                                    "bc_steps": 10, "warmup_steps": 5, "log_every": 10,
                                    "checkpoint_every": 0})
    return train(cfg, store, root / "run").run_dir


def raw_loop(env_id: str, episodes: int, actor=None) -> tuple[int, float]:
    """Step the raw simulator (gymnasium API) for ``episodes`` episodes; (steps, seconds)."""
    import bullet_safety_gym  # noqa: F401  (registers the ids)
    import gymnasium as gym

    env = gym.make(env_id)
    rng = np.random.default_rng(0)
    steps = 0
    t0 = time.perf_counter()
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            if actor is None:
                a = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
            else:
                a = actor(obs[None].astype(np.float32))[0]
            obs, _, term, trunc, _ = env.step(a)
            steps += 1
            done = term or trunc
    wall = time.perf_counter() - t0
    env.close()
    return steps, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="BallRun")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--run", type=Path, default=None, help="evaluate this run instead of a fresh one")
    args = ap.parse_args()

    import torch

    from feedbackgen.tasks import get_task
    from presa.checkpoint import load_actor
    from presa.evaluate import Evaluator

    torch.set_num_threads(1)
    task = get_task(args.task)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or build_run(Path(tmp), args.task)
        actor = load_actor(run)
        rows: list[tuple[str, float, float, int]] = []

        def best(label: str, fn) -> None:
            results = [fn() for _ in range(args.repeats)]
            steps, wall = min(results, key=lambda r: r[1])
            rows.append((label, steps / wall, wall, steps))

        best("raw random, 1 process", lambda: raw_loop(task.env_id, args.episodes))
        best("raw + policy, 1 process", lambda: raw_loop(task.env_id, args.episodes, actor))
        for workers in (1, 2):
            def cold(w=workers):
                t0 = time.perf_counter()
                with Evaluator(workers=w) as ev:
                    res = ev.evaluate(run, episodes=args.episodes, seed=0)
                return int(res.lengths.sum()), time.perf_counter() - t0

            def warm(w=workers):
                with Evaluator(workers=w) as ev:
                    ev.evaluate(run, episodes=w, seed=1)          # start the pool, load, open envs
                    t0 = time.perf_counter()
                    res = ev.evaluate(run, episodes=args.episodes, seed=0)
                    return int(res.lengths.sum()), time.perf_counter() - t0

            best(f"evaluator, {workers} worker(s), cold", cold)
            best(f"evaluator, {workers} worker(s), warm", warm)

        def cli() -> tuple[int, float]:
            exe = Path(sys.executable).with_name("presa")
            t0 = time.perf_counter()
            cmd = [str(exe), "eval", str(run), "--episodes", str(args.episodes), "--workers", "2", "--json",
                   "--no-save"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            wall = time.perf_counter() - t0
            return int(sum(json.loads(out)["per_episode"]["length"])), wall

        best("presa eval CLI, fresh process, 2 workers", cli)

    print(f"task {task.name} ({task.env_id}), {args.episodes} episodes, policy "
          f"{actor.obs_dim}->{'-'.join(str(h) for h in actor.meta['config']['hidden'])}->{actor.act_dim}, "
          f"cores {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}, "
          f"best of {args.repeats}")
    print(f"{'variant':<42} {'steps/s':>9} {'wall s':>8} {'steps':>7}")
    for label, sps, wall, steps in rows:
        print(f"{label:<42} {sps:9.0f} {wall:8.2f} {steps:7d}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
