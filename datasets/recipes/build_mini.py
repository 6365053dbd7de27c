"""Rebuild one shipped ``<Task>-mini`` dataset: behaviour zoo -> mixture collection -> card.

Stages (``--stage``, default ``all``):

1. ``train``: a behaviour zoo trained with stable-baselines3 PPO on reward - λ·cost, one model per λ
   in the task's recipe, saved at a few points of training (less and more skilled behaviour). The cost
   comes from our simulator layer (``feedbackgen.sim.make_env``: ``step`` returns the cost), wrapped
   as a gymnasium env for SB3. Models go to ``datasets/recipes/zoo/<Task>/`` (small zips).
2. ``collect``: ``feedbackgen.collect`` rolls out a mixture of the zoo (equal episode shares,
   per-episode Gaussian action noise) into ``datasets/<Task>-mini/`` (``data.hdf5`` +
   ``dataset.json``), the folder the task registry reads.
3. ``card``: ``README.md`` (what, how, sizes, reward/cost spread, fraction of episodes under each
   threshold) and ``scatter.png`` (episode reward vs cost by behaviour policy).

Usage (from the repository root)::

    .venv/bin/python datasets/recipes/build_mini.py --task BallRun            # everything
    .venv/bin/python datasets/recipes/build_mini.py --task BallRun --stage collect

Training uses one torch thread and a few minutes of CPU per task; collection uses every core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
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


# Reward per step differs by task (full speed: BallRun ~16, CarRun ~6, BallCircle ~2.5) while a cost
# is 1 per unsafe step, so the λ that makes a policy cautious differs too. Measured with this PPO
# setup: BallRun λ ≤ 4 reckless (cost ~90), λ ≥ 6 cautious (cost 0); BallCircle λ = 1 cost ~65,
# λ = 3 cost ~1. Fixed-λ policies are nearly all-or-nothing, so cost-limited members (λ by dual
# ascent towards an episode cost limit) fill in the middle of the cost range. CarCircle is left
# out: PPO needs far more than a few minutes to learn it.
# Collection (v2 of BallRun-mini and CarRun-mini): action noise up to 0.3 of the half-range (up to
# 1.2-1.5 in v1 made most episodes noise-dominated) and a reckless majority. With v1's equal shares
# BC-All was as safe as BC-Safe (cost 0 on both datasets); with these shares BC-All is unsafe and
# BC-Safe safe (results/bc-check).
RECIPES = {
    "BallRun": Recipe("BallRun", lambdas=(0.0, 5.0, 12.0), cost_limits=(10.0, 25.0, 50.0), lagrange_init=5.0,
                      lagrange_lr=0.01, train_steps=32_000, episodes=500, noise=(0.0, 0.3),
                      shares=(("ppo_lam0_100", 4.0), ("ppo_lam5_100", 4.0), ("ppo_lim50_100", 4.0)),
                      record_frames=2, frame_episodes=40),
    "BallCircle": Recipe("BallCircle", lambdas=(0.0, 4.0), cost_limits=(10.0, 25.0, 50.0), lagrange_init=1.5,
                         lagrange_lr=0.01, train_steps=24_000, episodes=300, noise=(0.0, 1.2)),
    "CarRun": Recipe("CarRun", lambdas=(0.0, 12.0), cost_limits=(25.0,), lagrange_init=4.0,
                     lagrange_lr=0.02, train_steps=24_000, episodes=300, noise=(0.0, 0.3),
                     shares=(("ppo_lam0_100", 4.0), ("ppo_lim25_100", 2.0))),
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
    """Episode share of each zoo member: the recipe's ``shares`` (else 1), scaled to 1 - ``random_share``."""
    named = dict(recipe.shares)
    unknown = set(named) - {p.stem for p in members}
    if unknown:
        raise FeedbackgenError(f"recipe {recipe.task} gives shares to unknown members {sorted(unknown)}: "
                               f"use the file stems of datasets/recipes/zoo/{recipe.task}/*.zip")
    raw = np.array([named.get(p.stem, 1.0) for p in members], dtype=float)
    return list((1.0 - recipe.random_share) * raw / raw.sum())


def collect_mixture(recipe: Recipe, workers: int | None) -> Path:
    """Collect the zoo mixture into datasets/<Task>-mini (replaces an existing one).

    With the recipe's ``record_frames`` K > 0 it also renders every K-th step (64×64, CPU renderer)
    of the first ``frame_episodes`` episodes into ``data.frames.hdf5`` for ``feedbackgen annotate``;
    the transitions are the same with or without frames.
    """
    from feedbackgen.collect import CollectConfig, collect

    members = zoo_members(recipe)
    shares = member_shares(recipe, members)
    policies = [(f"sb3:{p.relative_to(ROOT)}", share) for p, share in zip(members, shares, strict=True)]
    if recipe.random_share > 0:
        policies.append(("random", recipe.random_share))
    cfg = CollectConfig(task=recipe.task, out=dataset_dir(recipe.task).relative_to(ROOT),
                        episodes=recipe.episodes, policies=tuple(policies), noise=recipe.noise,
                        seed=recipe.seed, workers=workers, name=f"{recipe.task}-mini", overwrite=True,
                        record_frames=recipe.record_frames, frame_episodes=recipe.frame_episodes)
    t0 = time.time()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.time() - last[0] > 10 or done == total:
            last[0] = time.time()
            print(f"[{recipe.task}] collected {done}/{total} episodes", flush=True)

    out = collect(cfg, progress=progress)
    print(f"[{recipe.task}] collection done in {time.time() - t0:.0f}s -> {out}", flush=True)
    return out


def write_card(recipe: Recipe) -> Path:
    """README.md + scatter.png for datasets/<Task>-mini, computed from the data file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from feedbackgen.sources import read_dsrl

    folder = dataset_dir(recipe.task)
    meta = json.loads((folder / "dataset.json").read_text())
    task, coll = meta["task"], meta["collection"]
    with read_dsrl(folder / meta["file"]) as t:
        ep_r, ep_c = t.episode_returns()
        n_tr, n_ep, obs_dim, act_dim = t.n_transitions, t.n_episodes, t.obs_dim, t.act_dim
        lengths = np.asarray(t.episode_length)
    pol_idx = np.asarray(coll["episode_policy"])
    labels = [Path(p["spec"]).name.removesuffix(".zip") if p["spec"] != "random" else "random"
              for p in coll["policies"]]

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    cmap = plt.get_cmap("viridis", max(2, len(labels)))
    for i, lab in enumerate(labels):
        m = pol_idx == i
        ax.scatter(ep_c[m], ep_r[m], s=9, alpha=0.7, color=cmap(i), label=lab)
    for kappa in task["thresholds"]:
        ax.axvline(kappa, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("episode cost")
    ax.set_ylabel("episode reward")
    ax.set_title(f"{task['name']}: {n_ep} episodes ({task['env_id']})")
    ax.legend(fontsize=6, ncol=2, loc="lower right", markerscale=1.5)
    fig.tight_layout()
    tmp_png = folder / ".scatter.png.tmp"
    fig.savefig(tmp_png, format="png")
    plt.close(fig)
    tmp_png.replace(folder / "scatter.png")

    size_mb = (folder / meta["file"]).stat().st_size / 1e6
    frac = {k: float(np.mean(ep_c <= k)) for k in task["thresholds"]}
    corr = float(np.corrcoef(ep_c, ep_r)[0, 1]) if ep_c.std() > 0 else float("nan")
    rows = []
    for i, lab in enumerate(labels):
        m = pol_idx == i
        rows.append(f"| {lab} | {int(m.sum())} | {ep_r[m].mean():.1f} | {ep_c[m].mean():.1f} |")
    thr_rows = "\n".join(f"| ≤ {k:g} | {frac[k]:.1%} | {int(np.sum(ep_c <= k))} |"
                          for k in task["thresholds"])
    keys_tail = "rewards, costs, terminals, timeouts"
    lam_text = ", ".join(f"{x:g}" for x in recipe.lambdas)
    lim_text = (f", and cost-limited PPO (λ by dual ascent) for episode cost limits "
                f"{{{', '.join(f'{x:g}' for x in recipe.cost_limits)}}}" if recipe.cost_limits else "")
    if recipe.shares:
        share_text = ("a mixture of the {n} policies with episode shares " +
                      ", ".join(f"{name} {w:g}" for name, w in recipe.shares) + " and 1 for the others "
                      "(reckless majority, as in DSRL's data)")
    else:
        share_text = "an equal-share mixture of the {n} policies"
    share_text = share_text.format(n=len(labels))
    snap_text = ", ".join(f"{x:.0%}" for x in recipe.snapshots)
    card = f"""# {task['name']}

A small offline safe-RL dataset in the DSRL HDF5 layout, collected by this project in
`{task['env_id']}` (bullet-safety-gym, DSRL task `{task['base_task']}`), so that the toolkit works
offline. Registered as the task `{task['name']}`:

```bash
feedbackgen make --task {task['name']} --noise 0.1
```

## Contents

| | |
|---|---|
| file | `data.hdf5` ({size_mb:.1f} MB; DSRL keys: observations, next_observations, actions, {keys_tail}) |
| episodes | {n_ep} (length {lengths.min()}–{lengths.max()}, max episode steps {task['max_episode_steps']}) |
| transitions | {n_tr} |
| observation / action dims | {obs_dim} / {act_dim} |
| episode reward | {ep_r.min():.1f} … {ep_r.max():.1f} (mean {ep_r.mean():.1f}) |
| episode cost | {ep_c.min():.0f} … {ep_c.max():.0f} (mean {ep_c.mean():.1f}, median {np.median(ep_c):.0f}) |
| reward–cost correlation | {corr:.2f} |

The normalisation references in `dataset.json` (min/max episode reward and cost) are this
collection's own.

Episodes with cost under each threshold κ:

| cost | fraction | episodes |
|---|---|---|
{thr_rows}

![episode reward vs cost](scatter.png)

## How it was made

Behaviour zoo: stable-baselines3 PPO trained on reward − λ·cost for λ ∈ {{{lam_text}}}{lim_text}
({recipe.train_steps} steps each; snapshots at {snap_text} of the steps are kept as policies
of different skill). Collection: `feedbackgen.collect` with {share_text}, deterministic actions
plus per-episode Gaussian noise with std drawn from
U({recipe.noise[0]:g}, {recipe.noise[1]:g}) × action half-range, clipped; seed {recipe.seed}.

| policy | episodes | mean reward | mean cost |
|---|---|---|---|
{chr(10).join(rows)}

Rebuild (from the repository root; the models are in `datasets/recipes/zoo/{recipe.task}/`):

```bash
.venv/bin/python datasets/recipes/build_mini.py --task {recipe.task}                  # train+collect+card
.venv/bin/python datasets/recipes/build_mini.py --task {recipe.task} --stage collect  # reuse the zoo
```

Collection is reproducible from the seed (independent of the number of workers); zoo training is
seeded but PPO on another machine/library version may differ slightly. Versions:
{', '.join(f'{k} {v}' for k, v in coll['versions'].items())}.

License: Apache-2.0, like the toolkit.
"""
    tmp = folder / ".README.md.tmp"
    tmp.write_text(card)
    tmp.replace(folder / "README.md")
    return folder / "README.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(RECIPES))
    parser.add_argument("--stage", choices=("all", "train", "collect", "card"), default="all")
    parser.add_argument("--retrain", action="store_true", help="retrain zoo members that already exist")
    parser.add_argument("--workers", type=int, default=None, help="collection workers (default: all cores)")
    args = parser.parse_args(argv)
    recipe = RECIPES[args.task]
    os.chdir(ROOT)  # policy paths in the collection record are relative to the repository root
    try:
        if args.stage in ("all", "train"):
            train(recipe, retrain=args.retrain)
        if args.stage in ("all", "collect"):
            collect_mixture(recipe, args.workers)
        if args.stage in ("all", "collect", "card"):
            print(write_card(recipe))
    except FeedbackgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
