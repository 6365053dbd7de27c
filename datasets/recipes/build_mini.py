"""Rebuild the shipped ``<Task>-mini`` datasets: behaviour zoo -> mixture collection -> card.

Stages (``--stage``, default ``all``):

1. ``train``: a behaviour zoo trained with stable-baselines3 PPO on reward - λ·cost, one model per λ
   (and per cost limit, λ by dual ascent) in the task's recipe, saved at a few points of training
   (less and more skilled behaviour). The cost comes from our simulator layer
   (``feedbackgen.sim.make_env``: ``step`` returns the cost), wrapped as a gymnasium env for SB3.
   Models go to ``datasets/recipes/zoo/<Task>/`` (small zips).
2. ``collect``: ``feedbackgen.collect`` rolls out a mixture of the zoo (episode shares with a reckless
   majority, per-episode Gaussian action noise) plus within-episode mixtures cautious -> reckless
   (``switch:A>B``, switch step drawn per episode), over-collects, keeps every single-member episode
   and a cost-stratified sample of the mixture episodes (``Recipe.bands``), and writes
   ``datasets/<Task>-mini/`` (``data.hdf5`` + ``dataset.json``, the folder the task registry reads).
   The command and the CPU time it took go to ``dataset.json`` (``build``) and are printed.
3. ``card``: ``README.md`` (sizes, reward/cost spread, the frontier metrics per threshold, how it was
   made) and ``scatter.png``, and the dataset tables of ``datasets/README.md`` and ``README.md``, all
   from the data files (``cards.py``).

Usage (from the repository root)::

    .venv/bin/python datasets/recipes/build_mini.py --all --stage collect     # every dataset, from the zoo
    .venv/bin/python datasets/recipes/build_mini.py --task BallRun            # everything for one
    .venv/bin/python datasets/recipes/build_mini.py --task BallRun --stage collect --seed 1
    .venv/bin/python datasets/recipes/build_mini.py --all --stage card        # cards and tables only

Training uses one torch thread and a few minutes of CPU per task; collection uses every core
(``--workers``); the result does not depend on the number of workers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from feedbackgen.errors import FeedbackgenError  # noqa: E402


@dataclass(frozen=True)
class Recipe:
    """How one mini dataset is made.

    Attributes:
        task: the DSRL/bullet task the data is collected in.
        lambdas: cost penalties λ of the zoo (reward - λ·cost); small λ = reckless, large = cautious.
        train_steps: PPO environment steps per λ.
        snapshots: fractions of ``train_steps`` at which the model is saved (early snapshots are
            less skilled behaviour); each snapshot is one policy of the mixture.
        episodes: episodes in the dataset.
        noise: range of the per-episode action-noise std (fraction of the action half-range).
        random_share: share of episodes from the uniform random policy (0 = none).
        seed: seed of training and collection.
        cost_limits: episode cost limits of cost-limited members: PPO whose λ follows dual ascent
            (λ += lagrange_lr · (mean episode cost − limit) after each rollout, from
            lagrange_init), the way Lagrangian safe-RL methods trade reward for cost.
        shares: episode shares of named members (file stem, e.g. ``ppo_lam0_100``); every other
            member has share 1. Giving the reckless members the larger share is what makes
            BC-All unsafe, as in DSRL's data: behaviour cloning of a mixture whose majority is
            cautious collapses onto the cautious mode (a deterministic policy regresses to the
            conditional mean action, then only visits states the cautious members cover).
        record_frames: render every K-th step into ``data.frames.hdf5`` (0: none), for
            ``feedbackgen annotate``; ``frame_episodes``: only in the first N episodes.
        version: the dataset version written to ``dataset.json`` and the HDF5 attributes.
        switches: within-episode mixtures ``(from member, to member, share)``: the ``from`` member
            until a switch step drawn uniformly in ``switch_range`` × the episode limit, then the
            ``to`` member (``feedbackgen.collect``'s ``switch:A>B`` policy). Cautious → reckless
            gives episodes of every intermediate cost, with reward rising with cost.
        bands: the cost-stratified density filter applied after over-collecting (``episodes`` is
            then the pool size): ``(low, high, n)`` keeps up to ``n`` mixture episodes with cost in
            (low, high], taken round-robin from sub-bins of width ≤ ``band_bin`` (so costs spread
            over the band), in each sub-bin the highest-reward episode first, then in a seeded
            random order (so rewards spread too). Episodes of single zoo members are all kept.
        exclude: zoo members (file stems) left out of the collection (they stay in the zoo).
        policies: behaviour policies that are not zoo members, ``(spec, weight)`` in
            ``feedbackgen.collect``'s spec syntax (e.g. MetaDrive's own ``idm:SPEED`` and
            ``switch:idm:A>idm:B``); their weights count like ``shares``. The band filter applies to
            their ``switch:`` entries too.
        max_episode_steps: episode limit of the collection (None: the task's); recorded as the
            dataset's ``max_episode_steps``, where evaluation truncates.
        compression: HDF5 compression of ``data.hdf5`` (None, ``gzip`` or ``lzf``; transparent to
            readers), for high-dimensional observations.
    """

    task: str
    lambdas: tuple[float, ...]
    train_steps: int
    episodes: int
    noise: tuple[float, float]
    random_share: float = 0.0
    seed: int = 0
    snapshots: tuple[float, ...] = (0.25, 1.0)
    cost_limits: tuple[float, ...] = ()
    lagrange_init: float = 1.0
    lagrange_lr: float = 0.02
    shares: tuple[tuple[str, float], ...] = ()
    record_frames: int = 0
    frame_episodes: int | None = None
    version: str = "v3"
    switches: tuple[tuple[str, str, float], ...] = ()
    switch_range: tuple[float, float] = (0.0, 1.0)
    bands: tuple[tuple[float, float, int], ...] = ()
    band_bin: float = 2.5
    exclude: tuple[str, ...] = ()
    policies: tuple[tuple[str, float], ...] = ()
    max_episode_steps: int | None = None
    compression: str | None = None


# Reward per step differs by task (full speed: BallRun ~16, CarRun ~6, BallCircle ~2.5) while a cost
# is 1 per unsafe step, so the λ that makes a policy cautious differs too. Measured with this PPO
# setup: BallRun λ ≤ 4 reckless (cost ~90), λ ≥ 6 cautious (cost 0); BallCircle λ = 1 cost ~65,
# λ = 3 cost ~1. Fixed-λ policies are nearly all-or-nothing, so cost-limited members (λ by dual
# ascent towards an episode cost limit) fill in the middle of the cost range. CarCircle is left
# out: PPO needs far more than a few minutes to learn it.
# Collection v2 (BallRun-mini, CarRun-mini): action noise up to 0.3 of the half-range (up to 1.2-1.5
# in v1 made most episodes noise-dominated) and a reckless majority. With v1's equal shares BC-All was
# as safe as BC-Safe (cost 0 on both datasets); with a reckless majority BC-All is unsafe and BC-Safe
# safe (results/bc-check).
# Collection v3 (all three): v2 had almost no episodes near the thresholds (BallRun-mini: no episode
# with cost 1..36) and the best safe reward hardly rose from κ=10 to κ=40. v3 keeps v2's members
# (reckless majority) and adds within-episode mixtures cautious → reckless (`switches`), which give
# every intermediate cost with reward rising with cost; it over-collects them (`episodes` is the pool)
# and keeps a cost-stratified sample (`bands`) dense just under each threshold.
_BANDS = ((-1.0, 5.0, 30), (5.0, 10.0, 60), (10.0, 20.0, 60), (20.0, 40.0, 60), (40.0, 80.0, 40))
RECIPES = {
    "BallRun": Recipe("BallRun", lambdas=(0.0, 5.0, 12.0), cost_limits=(10.0, 25.0, 50.0), lagrange_init=5.0,
                      lagrange_lr=0.01, train_steps=32_000, episodes=1600, noise=(0.0, 0.3),
                      shares=(("ppo_lam0_100", 10.0), ("ppo_lam5_100", 10.0), ("ppo_lim50_100", 10.0)),
                      switches=(("ppo_lam12_100", "ppo_lam0_100", 23.5),
                                ("ppo_lim10_100", "ppo_lam5_100", 23.5),
                                ("ppo_lim25_100", "ppo_lim50_100", 23.5),
                                ("ppo_lam12_025", "ppo_lam0_100", 23.5)),
                      switch_range=(0.4, 1.0), bands=_BANDS, record_frames=2, frame_episodes=40),
    # v3: the switches go to lam0 only; switches to lim50_100 (a member reaching the reckless members'
    # reward at cost ~30) gave 430 reward at cost ≤ 10 and flattened the frontier (best safe 0.83 at
    # κ=10, 0.89 at κ=40).
    "BallCircle": Recipe("BallCircle", lambdas=(0.0, 4.0), cost_limits=(10.0, 25.0, 50.0), lagrange_init=1.5,
                         lagrange_lr=0.01, train_steps=24_000, episodes=1100, noise=(0.0, 0.5),
                         shares=(("ppo_lam0_100", 13.3), ("ppo_lam0_025", 5.0)),
                         switches=(("ppo_lam4_100", "ppo_lam0_100", 32.5),
                                   ("ppo_lim10_100", "ppo_lam0_100", 32.5)),
                         switch_range=(0.3, 1.0),
                         bands=((-1.0, 5.0, 25), (5.0, 10.0, 45), (10.0, 20.0, 45), (20.0, 40.0, 45),
                                (40.0, 80.0, 30))),
    # v3: the switches start from the two fully cautious members (lam12); lam0_025 and lim25_025 (safe
    # but faster: up to 487 reward at cost 0) are left out, as were switches from them: with them the
    # best safe reward rose only 0.085 from κ=10 to 40 (a reckless phase needs ~20 steps at cost to get
    # up to speed, so the first 40 cost units buy little reward).
    "CarRun": Recipe("CarRun", lambdas=(0.0, 12.0), cost_limits=(25.0,), lagrange_init=4.0,
                     lagrange_lr=0.02, train_steps=24_000, episodes=1020, noise=(0.0, 0.3),
                     shares=(("ppo_lam0_100", 12.0), ("ppo_lim25_100", 2.0)),
                     exclude=("ppo_lam0_025", "ppo_lim25_025"),
                     switches=(("ppo_lam12_025", "ppo_lam0_100", 17.5),
                               ("ppo_lam12_100", "ppo_lam0_100", 17.5)),
                     switch_range=(0.7, 1.0),
                     bands=((-1.0, 5.0, 20), (5.0, 10.0, 45), (10.0, 20.0, 45), (20.0, 40.0, 45),
                            (40.0, 80.0, 30))),
    # Safety-Gymnasium (v1 of this dataset): DSRL's thresholds 20 / 40 / 80, so the bands reach 160.
    "PointCircle1": Recipe(
        "PointCircle1", lambdas=(0.0, 0.5), cost_limits=(40.0,), lagrange_init=0.1, lagrange_lr=0.002,
        train_steps=40_000, snapshots=(0.5, 1.0), episodes=340, noise=(0.0, 0.3), version="v1",
        compression="gzip", shares=(("ppo_lam0_100", 3.0),),
        switches=(("ppo_lam0.5_100", "ppo_lam0_100", 8.0), ("ppo_lim40_100", "ppo_lam0_100", 8.0),
                  ("ppo_lam0.5_050", "ppo_lam0_050", 8.0)),
        switch_range=(0.6, 1.0),
        bands=((-1.0, 10.0, 8), (10.0, 20.0, 20), (20.0, 40.0, 25), (40.0, 80.0, 25), (80.0, 160.0, 18)),
        band_bin=5.0),
    # MetaDrive: no RL. MetaDrive's own IDM policy (IDM car following, PID lane keeping, routing lane
    # changes) at a target speed is the behaviour: DSRL's per-step velocity cost 0.01·max(0, v − 10 km/h)
    # makes the episode cost grow with the target speed while the reward (progress along the route) grows
    # with it too; slow-then-fast and fast-then-slow switches fill in between. Episodes are cut at 400
    # steps (DSRL: 1000) and data.hdf5 is gzip-compressed to keep the 261-dim lidar observations within
    # 10 MB. v1 had single-speed members at every target from 8 to 60 km/h; BC-All was as safe as
    # BC-Safe (cost 1.6 at 400 steps): holding a speed takes about the same throttle at 8 as at 30 km/h,
    # so a clone of a mixture of cruisers settles at the slowest well-populated speed, and slow cruisers
    # spend the most steps near the start. v2 keeps few slow cruisers (8-12.5 km/h, the safe episodes at
    # κ = 10) and a majority of members that never reach their target (60, 90 km/h: mean throttle
    # 0.4-0.7 against 0.1-0.14); fast-then-slow switches early in the episode (fraction 0-0.6) fill the
    # cost range below the fast members. Slow-then-fast switches were dropped: their slow start made
    # BC-All cautious again (cost 17 at 400 steps with them, 26-39 without).
    "easysparse": Recipe(
        "easysparse", lambdas=(), train_steps=0, episodes=150, noise=(0.0, 0.1), version="v2",
        max_episode_steps=400, compression="gzip",
        policies=tuple((f"idm:{v:g}", 2.0) for v in (8, 10, 11, 12, 12.5))
        + tuple((f"idm:{v:g}", 30.0) for v in (60, 90))
        + (("switch:idm:60>idm:10", 55.0),),
        switch_range=(0.0, 0.6),
        bands=((-1.0, 5.0, 4), (5.0, 10.0, 10), (10.0, 20.0, 10), (20.0, 40.0, 10), (40.0, 80.0, 10))),
}


def zoo_dir(task: str) -> Path:
    return ROOT / "datasets" / "recipes" / "zoo" / task


def dataset_dir(task: str) -> Path:
    return ROOT / "datasets" / f"{task}-mini"


def _member_name(kind: str, value: float, frac: float) -> str:
    return f"ppo_{kind}{value:g}_{int(round(100 * frac)):03d}.zip"


def make_penalised_env(task: str, lam: float):
    """Our simulator env as a gymnasium env whose reward is reward - λ·cost (for SB3).

    ``info['cost']`` and ``info['reward']`` keep the raw signals; at the end of an episode
    ``info['episode_cost']`` holds its cost sum. ``set_lambda`` changes λ (cost-limited training).
    """
    import gymnasium as gym

    from feedbackgen.sim import make_env

    class CostPenalised(gym.Env):
        metadata = {"render_modes": []}

        def __init__(self) -> None:
            self.env = make_env(task)
            self.observation_space = self.env.observation_space
            self.action_space = self.env.action_space
            self.lam = lam
            self.episode_cost = 0.0

        def set_lambda(self, value: float) -> None:
            self.lam = float(value)

        def reset(self, *, seed=None, options=None):
            self.episode_cost = 0.0
            return self.env.reset(seed=seed)

        def step(self, action):
            obs, reward, cost, terminated, truncated, info = self.env.step(action)
            self.episode_cost += float(cost)
            info = dict(info, cost=float(cost), reward=float(reward))
            if terminated or truncated:
                info["episode_cost"] = self.episode_cost
            return obs, float(reward) - self.lam * float(cost), terminated, truncated, info

        def close(self) -> None:
            self.env.close()

    return CostPenalised()


def _lagrange_callback(limit: float, lr: float, lam0: float):
    """SB3 callback: after each rollout, λ += lr·(mean episode cost − limit), λ ≥ 0 (dual ascent)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Lagrange(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.lam, self.costs = lam0, []

        def _on_training_start(self) -> None:
            self.training_env.env_method("set_lambda", self.lam)

        def _on_step(self) -> bool:
            self.costs += [i["episode_cost"] for i in self.locals["infos"] if "episode_cost" in i]
            return True

        def _on_rollout_end(self) -> None:
            if self.costs:
                self.lam = max(0.0, self.lam + lr * (float(np.mean(self.costs)) - limit))
                self.costs = []
                self.training_env.env_method("set_lambda", self.lam)

    return Lagrange()


def _members(recipe: Recipe) -> list[tuple[str, float]]:
    return [("lam", x) for x in recipe.lambdas] + [("lim", x) for x in recipe.cost_limits]


def train(recipe: Recipe, retrain: bool = False) -> list[Path]:
    """Train the zoo: PPO per fixed λ and per cost limit, saved at each snapshot fraction.

    Members whose final snapshot exists are kept unless ``retrain``.
    """
    if not _members(recipe):
        print(f"[{recipe.task}] no zoo to train (the recipe's behaviour comes from the simulator)",
              flush=True)
        return []
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(1)
    out = zoo_dir(recipe.task)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (kind, value) in enumerate(_members(recipe)):
        names = [_member_name(kind, value, f) for f in recipe.snapshots]
        if not retrain and all((out / n).is_file() for n in names):
            paths += [out / n for n in names]
            continue
        lam0 = value if kind == "lam" else recipe.lagrange_init
        venv = DummyVecEnv([lambda lam0=lam0: make_penalised_env(recipe.task, lam0) for _ in range(4)])
        venv.seed(recipe.seed + 1000 * k)
        model = PPO("MlpPolicy", venv, n_steps=512, batch_size=128, seed=recipe.seed + k, device="cpu",
                    verbose=0, policy_kwargs={"net_arch": [64, 64]})
        callback = _lagrange_callback(value, recipe.lagrange_lr, lam0) if kind == "lim" else None
        t0 = time.time()
        done = 0
        for frac, name in zip(recipe.snapshots, names, strict=True):
            steps = int(round(frac * recipe.train_steps))
            model.learn(steps - done, reset_num_timesteps=done == 0, callback=callback)
            done = steps
            model.save(out / name)
            paths.append(out / name)
        venv.close()
        what = f"λ={value:g}" if kind == "lam" else f"cost limit {value:g} (final λ={callback.lam:.2f})"
        print(f"[{recipe.task}] trained {what}: {recipe.train_steps} steps in {time.time() - t0:.0f}s",
              flush=True)
    (out / "zoo.json").write_text(json.dumps({
        "task": recipe.task, "algorithm": "stable-baselines3 PPO (MlpPolicy 64x64, n_steps 512 x 4 envs, "
        "batch 128)", "objective": "reward - lambda * cost",
        "lambdas": list(recipe.lambdas), "cost_limits": list(recipe.cost_limits),
        "lagrange": {"init": recipe.lagrange_init, "lr": recipe.lagrange_lr,
                     "rule": "after each rollout: lambda = max(0, lambda + lr * (mean episode cost "
                             "- limit))"},
        "train_steps": recipe.train_steps, "snapshots": list(recipe.snapshots),
        "seed": recipe.seed}, indent=2) + "\n")
    return paths


def zoo_members(recipe: Recipe) -> list[Path]:
    paths = []
    for kind, value in _members(recipe):
        for frac in recipe.snapshots:
            p = zoo_dir(recipe.task) / _member_name(kind, value, frac)
            if not p.is_file():
                raise FeedbackgenError(f"zoo model {p} is missing: run the train stage first "
                                       f"(--task {recipe.task} --stage train)")
            paths.append(p)
    return paths


def member_shares(recipe: Recipe, members: list[Path]) -> list[float]:
    """Episode share of each zoo member: the recipe's ``shares`` (else 1), scaled to 1 - ``random_share``.

    With ``switches`` the shares are relative to the sum of member and switch weights (see
    :func:`policy_mixture`).
    """
    named = dict(recipe.shares)
    unknown = (set(named) | {x for a, b, _ in recipe.switches for x in (a, b)}) - {p.stem for p in members}
    if unknown:
        raise FeedbackgenError(f"recipe {recipe.task} gives shares to unknown members {sorted(unknown)}: "
                               f"use the file stems of datasets/recipes/zoo/{recipe.task}/*.zip")
    raw = np.array([named.get(p.stem, 1.0) for p in members], dtype=float)
    total = raw.sum() + sum(w for _, _, w in recipe.switches) + sum(w for _, w in recipe.policies)
    return list((1.0 - recipe.random_share) * raw / total)


def policy_mixture(recipe: Recipe) -> list[tuple[str, float]]:
    """The ``(spec, share)`` list of the collection: zoo members, switch mixtures, then random."""
    members = [p for p in zoo_members(recipe) if p.stem not in recipe.exclude]
    shares = member_shares(recipe, members)
    policies = [(f"sb3:{p.relative_to(ROOT)}", share) for p, share in zip(members, shares, strict=True)]
    total = (sum(dict(recipe.shares).get(p.stem, 1.0) for p in members)
             + sum(w for _, _, w in recipe.switches) + sum(w for _, w in recipe.policies))
    zoo = zoo_dir(recipe.task).relative_to(ROOT)
    for a, b, w in recipe.switches:
        share = (1.0 - recipe.random_share) * w / total
        policies.append((f"switch:sb3:{zoo / a}.zip>sb3:{zoo / b}.zip", share))
    for spec, w in recipe.policies:
        policies.append((spec, (1.0 - recipe.random_share) * w / total))
    if recipe.random_share > 0:
        policies.append(("random", recipe.random_share))
    return policies


def band_selector(recipe: Recipe, filtered: list[int], seed: int):
    """The cost-stratified density filter of ``recipe.bands`` (a ``select`` for ``feedbackgen.collect``).

    Episodes whose policy index is not in ``filtered`` are all kept; of the others, each band
    ``(low, high, n)`` keeps up to ``n`` with cost in (low, high], round-robin over sub-bins of
    width ≤ ``recipe.band_bin``, each sub-bin in the order: highest reward first, then seeded random.
    """

    def select(ep_reward: np.ndarray, ep_cost: np.ndarray, ep_policy: np.ndarray):
        rng = np.random.default_rng([seed, 20261206])
        is_f = np.isin(ep_policy, filtered)
        keep = list(np.flatnonzero(~is_f))
        kept = []
        for lo, hi, n in recipe.bands:
            k = max(1, int(np.ceil((hi - lo) / recipe.band_bin)))
            edges = np.linspace(lo, hi, k + 1)
            queues = []
            for a, b in zip(edges[:-1], edges[1:], strict=True):
                idx = np.flatnonzero(is_f & (ep_cost > a) & (ep_cost <= b))
                if idx.size:
                    top = idx[np.argmax(ep_reward[idx])]
                    rest = rng.permutation(idx[idx != top])
                    queues.append([int(top), *map(int, rest)])
            taken = []
            while len(taken) < n and any(queues):
                for q in queues:
                    if q and len(taken) < n:
                        taken.append(q.pop(0))
            keep += taken
            kept.append(len(taken))
        rule = (f"cost bands (low, high] in sub-bins of width ≤ {recipe.band_bin:g}, round-robin, each "
                "sub-bin highest reward first then seeded random")
        return np.asarray(keep, dtype=np.int64), {"rule": rule, "bands": [list(b) for b in recipe.bands],
                                                  "kept_per_band": kept}

    return select


def collect_mixture(recipe: Recipe, workers: int | None) -> Path:
    """Collect the zoo mixture into datasets/<Task>-mini (replaces an existing one).

    With the recipe's ``record_frames`` K > 0 it also renders every K-th step (64×64, CPU renderer)
    of the first ``frame_episodes`` episodes into ``data.frames.hdf5`` for ``feedbackgen annotate``;
    the transitions are the same with or without frames.
    """
    from feedbackgen.collect import CollectConfig, collect

    policies = policy_mixture(recipe)
    cfg = CollectConfig(task=recipe.task, out=dataset_dir(recipe.task).relative_to(ROOT),
                        episodes=recipe.episodes, policies=tuple(policies), noise=recipe.noise,
                        seed=recipe.seed, workers=workers, name=f"{recipe.task}-mini", overwrite=True,
                        record_frames=recipe.record_frames, frame_episodes=recipe.frame_episodes,
                        version=recipe.version, switch_range=recipe.switch_range,
                        max_episode_steps=recipe.max_episode_steps, compression=recipe.compression)
    select = None
    if recipe.bands:
        filtered = [i for i, (spec, _) in enumerate(cfg.policies) if spec.startswith("switch:")]
        select = band_selector(recipe, filtered, recipe.seed)
    t0 = time.time()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.time() - last[0] > 10 or done == total:
            last[0] = time.time()
            print(f"[{recipe.task}] collected {done}/{total} episodes", flush=True)

    out = collect(cfg, progress=progress, select=select)
    print(f"[{recipe.task}] collection done in {time.time() - t0:.0f}s -> {out}", flush=True)
    return out


def write_card(recipe: Recipe) -> Path:
    """README.md + scatter.png of datasets/<Task>-mini and the README tables (``cards.py``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cards

    cards.write_all([f"{recipe.task}-mini"])
    return dataset_dir(recipe.task) / "README.md"


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (collection workers), user + system."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def record_build(recipe: Recipe, cpu: dict[str, float], wall: float, workers: int | None,
                 seed_arg: bool) -> None:
    """Add the rebuild command and the CPU time spent to datasets/<Task>-mini/dataset.json."""
    from feedbackgen.collect import _dumps, available_cores

    path = dataset_dir(recipe.task) / "dataset.json"
    meta = json.loads(path.read_text())
    cmd = f".venv/bin/python datasets/recipes/build_mini.py --task {recipe.task} --stage collect"
    if seed_arg:
        cmd += f" --seed {recipe.seed}"
    meta["build"] = {"command": cmd, "all_command": ".venv/bin/python datasets/recipes/build_mini.py --all "
                     "--stage collect", "seed": recipe.seed, "version": recipe.version,
                     "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()}, "wall_seconds": round(wall, 1),
                     "workers": int(workers or available_cores())}
    path.write_text(_dumps(meta))


def build(recipe: Recipe, stage: str, retrain: bool, workers: int | None, seed_arg: bool) -> None:
    """Run the stages of one recipe, printing (and recording in dataset.json) their CPU time."""
    cpu: dict[str, float] = {}
    t_wall = time.time()
    if stage in ("all", "train"):
        c0 = _cpu_seconds()
        train(recipe, retrain=retrain)
        cpu["train"] = _cpu_seconds() - c0
    if stage in ("all", "collect"):
        c0 = _cpu_seconds()
        collect_mixture(recipe, workers)
        cpu["collect"] = _cpu_seconds() - c0
        record_build(recipe, cpu, time.time() - t_wall, workers, seed_arg)
    if stage in ("all", "collect", "card"):
        print(write_card(recipe))
    if cpu:
        print(f"[{recipe.task}] CPU time: " + ", ".join(f"{k} {v:.0f} s" for k, v in cpu.items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", choices=sorted(RECIPES))
    which.add_argument("--all", action="store_true", help="every dataset of the RECIPES table")
    parser.add_argument("--stage", choices=("all", "train", "collect", "card"), default="all")
    parser.add_argument("--seed", type=int, default=None,
                        help="collection/training seed (default: the recipe's)")
    parser.add_argument("--retrain", action="store_true", help="retrain zoo members that already exist")
    parser.add_argument("--workers", type=int, default=None, help="collection workers (default: all cores)")
    args = parser.parse_args(argv)
    recipes = [RECIPES[t] for t in sorted(RECIPES)] if args.all else [RECIPES[args.task]]
    if args.seed is not None:
        recipes = [replace(r, seed=args.seed) for r in recipes]
    os.chdir(ROOT)  # policy paths in the collection record are relative to the repository root
    try:
        if args.stage == "card":
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            import cards

            for p in cards.write_all(None if args.all else [f"{args.task}-mini"]):
                print(p.relative_to(ROOT))
            return 0
        c0 = _cpu_seconds()
        for recipe in recipes:
            build(recipe, args.stage, args.retrain, args.workers, args.seed is not None)
        if len(recipes) > 1:
            print(f"total CPU time: {_cpu_seconds() - c0:.0f} s", flush=True)
    except FeedbackgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
