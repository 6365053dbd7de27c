"""Collect an offline safe-RL dataset by rolling out behaviour policies in a simulator.

The output is the DSRL HDF5 layout (written by :func:`feedbackgen.sources.write_dsrl`), so every
reader of DSRL files reads it. Alongside it goes a JSON record with the collection's normalisation
references (min/max episode reward and cost) and how the data was made (policies, noise, seeds,
library versions).

Behaviour policies (``CollectConfig.policies``; several form a mixture with episode shares):

- ``random``: actions uniform in the action space.
- ``sb3:PATH``: a saved stable-baselines3 model (``.zip``; PPO, A2C, SAC, TD3 or DDPG), acting
  deterministically. Needs the ``zoo`` extra.
- ``presa:PATH``: a presa checkpoint or run directory (the latest checkpoint), acting with its
  deterministic mean action; loaded through the registry of :mod:`feedbackgen.policies`, which
  ``presa`` fills (needs torch).
- ``idm:SPEED``: MetaDrive tasks only: MetaDrive's own IDM policy (IDM car following, PID lane
  keeping, routing lane changes) driving the ego vehicle with target speed ``SPEED`` km/h
  (MetaDrive's traffic uses 30); :func:`feedbackgen.sim.metadrive.idm_driver`.
- ``switch:A>B``: a within-episode mixture: policy ``A`` (any spec above) until the episode's
  switch step, then ``B``. The switch step is drawn per episode, uniform over the episode limit
  (``EpisodePlan.switch_frac``), so switching from a cautious to a reckless policy (or back) gives
  episodes of every intermediate cost, with reward rising with cost.

Per-episode action noise: each episode draws a Gaussian standard deviation uniformly from
``noise`` (a fraction of the action range's half-width) and adds that noise to every action,
clipped to the action space.

Reproducibility: one ``seed`` is expanded with :class:`numpy.random.SeedSequence` into one child
sequence per episode, which fixes that episode's policy, noise level, noise draws and simulator
reset seed. Episodes run in a pool of spawned worker processes (each makes its own environment
and policies; the simulator never runs in the calling process), and the result does not depend on
the number of workers.

Example:
    >>> from feedbackgen.collect import CollectConfig, collect
    >>> cfg = CollectConfig(task="BallRun", out="ballrun.hdf5", episodes=20,
    ...                     policies=("random",), noise=(0.0, 0.2), seed=0)
    >>> path = collect(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

import feedbackgen
from feedbackgen._io import atomic_dir, atomic_write_text, available_cores, git_commit, sha256_tree
from feedbackgen.errors import FeedbackgenError
from feedbackgen.policies import get_policy_loader
from feedbackgen.tasks import SUITE_THRESHOLDS

POLICY_KINDS = ("random", "sb3", "presa", "idm", "switch")
HDF5_SUFFIXES = (".hdf5", ".h5")
ProgressFn = Callable[[int, int], None]
SelectFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, dict]]


# ----------------------------------------------------------------------------------------------
# configuration


def parse_policy(text: str) -> tuple[str, float]:
    """Parse one policy entry ``SPEC`` or ``SPEC@SHARE`` into ``(spec, share)``.

    Args:
        text: ``random``, ``sb3:PATH`` or ``presa:PATH``, optionally followed by ``@SHARE`` (a
            positive number; shares of a mixture are normalised to sum to 1). Default share 1.

    Returns:
        The policy spec and its (unnormalised) share.

    Raises:
        FeedbackgenError: unknown kind or a bad share.

    Example:
        >>> parse_policy("sb3:zoo/lam5.zip@0.25")
        ('sb3:zoo/lam5.zip', 0.25)
    """
    text = text.strip()
    spec, share = text, 1.0
    if "@" in text:
        head, _, tail = text.rpartition("@")
        try:
            share = float(tail)
        except ValueError:
            pass  # an '@' that is part of a path: the whole text is the spec, with share 1
        else:
            spec = head
    parts = switch_parts(spec) or (spec,)
    for part in parts:
        kind = part.split(":", 1)[0]
        if kind not in POLICY_KINDS[:4] or (kind == "random") != (part == "random") or part.endswith(":"):
            raise FeedbackgenError(f"bad policy '{text}': use random, sb3:PATH, presa:PATH, idm:SPEED or "
                                   "switch:SPEC>SPEC, optionally followed by @SHARE")
        if kind == "idm" and not _idm_speed_ok(part):
            raise FeedbackgenError(f"bad policy '{text}': idm:SPEED needs a target speed in km/h (> 0)")
    if not np.isfinite(share) or share <= 0:
        raise FeedbackgenError(f"bad policy share in '{text}': the share after '@' must be a positive number")
    return spec, share


def _idm_speed_ok(part: str) -> bool:
    try:
        return 0 < float(part.split(":", 1)[1]) < 1000
    except ValueError:
        return False


def switch_parts(spec: str) -> tuple[str, str] | None:
    """The two specs of ``switch:A>B`` (``None`` for any other spec); empty parts stay empty."""
    if not spec.startswith("switch:"):
        return None
    first, _, second = spec[len("switch:"):].partition(">")
    return first.strip(), second.strip()


def policy_files(spec: str) -> list[Path]:
    """The model files a policy spec names (none for ``random``; two for a ``switch:`` spec)."""
    return [Path(p.split(":", 1)[1]).expanduser() for p in (switch_parts(spec) or (spec,))
            if p != "random" and not p.startswith("idm:")]


def _as_policy_tuple(policies) -> tuple[tuple[str, float], ...]:
    if isinstance(policies, str):
        policies = (policies,)
    out = []
    for p in policies:
        if isinstance(p, str):
            spec, share = parse_policy(p)
        else:
            spec, share = p
            spec, _ = parse_policy(str(spec))
            share = float(share)
            if not np.isfinite(share) or share <= 0:
                raise FeedbackgenError(f"bad policy share {share} for '{spec}': shares must be positive")
        out.append((spec, share))
    if not out:
        raise FeedbackgenError("no behaviour policy given: pass at least one (e.g. --policy random)")
    return tuple(out)


@dataclass(frozen=True)
class CollectConfig:
    """What to collect and where to write it (validated on construction, never mutated).

    Attributes:
        task: a task name (``BallRun``), a shipped task or a simulator env id.
        out: output path. A ``.hdf5``/``.h5`` file gets a JSON record next to it (same stem,
            ``.json``); any other path is a dataset folder that receives ``data.hdf5`` and
            ``dataset.json`` (the shipped-dataset format, registrable as a task).
        episodes: number of episodes to roll out.
        policies: behaviour policies, each ``SPEC``/``SPEC@SHARE`` or a ``(spec, share)`` pair;
            normalised to ``((spec, share), ...)`` with shares summing to 1.
        noise: ``(low, high)`` range of the per-episode Gaussian action-noise std, as a fraction of
            the action range's half-width; ``(0, 0)`` means no noise.
        seed: the one seed everything is derived from.
        version: dataset version (e.g. ``v3``), recorded as the HDF5 attribute ``dataset_version``
            (a store made from the file records it in its source attributes) and in the JSON record.
        switch_range: ``(low, high)`` fractions of the episode limit between which ``switch:``
            policies switch (uniformly); e.g. ``(0.6, 1.0)``: at most the last 40 % of the
            episode under the second policy.
        workers: processes to use; ``None`` means every available core.
        max_episode_steps: cap on episode length; ``None`` uses the environment's.
        name: task name recorded for a dataset folder (default: the folder's name).
        overwrite: replace an existing output.
        record_frames: render every K-th step of every episode (0: no frames; bullet tasks only)
            into a sidecar ``<stem>.frames.hdf5`` next to the data (see :mod:`feedbackgen.frames`).
        frame_size: frame width and height in pixels.
        frame_episodes: record frames in the first N episodes only (None: every episode), to keep a
            shipped dataset small.
        compression: HDF5 compression of the data file (``None``, ``"gzip"`` or ``"lzf"``; see
            :func:`feedbackgen.sources.write_dsrl`), transparent to readers.
    """

    task: str
    out: Path
    episodes: int
    policies: tuple = ("random",)
    noise: tuple[float, float] = (0.0, 0.0)
    seed: int = 0
    workers: int | None = None
    max_episode_steps: int | None = None
    name: str | None = None
    overwrite: bool = False
    record_frames: int = 0
    frame_size: int = 64
    frame_episodes: int | None = None
    version: str | None = None
    switch_range: tuple[float, float] = (0.0, 1.0)
    compression: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not str(self.task).strip():
            raise FeedbackgenError("no task given: pass --task (e.g. BallRun)")
        set_(self, "out", Path(self.out))
        if int(self.episodes) < 1:
            raise FeedbackgenError(f"episodes must be at least 1 (got {self.episodes})")
        set_(self, "episodes", int(self.episodes))
        pol = _as_policy_tuple(self.policies)
        total = sum(s for _, s in pol)
        set_(self, "policies", tuple((spec, share / total) for spec, share in pol))
        for spec, _ in self.policies:
            for path in policy_files(spec):
                if not path.exists():
                    raise FeedbackgenError(f"policy file {path} does not exist: check the path in "
                                           f"'{spec}'")
        try:
            lo, hi = (float(x) for x in self.noise)
        except (TypeError, ValueError):
            raise FeedbackgenError(f"bad noise range {self.noise!r}: give two numbers LOW HIGH "
                                   "with 0 <= LOW <= HIGH") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo <= hi):
            raise FeedbackgenError(f"bad noise range ({lo}, {hi}): need 0 <= LOW <= HIGH "
                                   "(std as a fraction of the action half-range)")
        set_(self, "noise", (lo, hi))
        set_(self, "seed", int(self.seed))
        if self.workers is not None and int(self.workers) < 1:
            raise FeedbackgenError(f"workers must be at least 1 (got {self.workers})")
        if self.max_episode_steps is not None and int(self.max_episode_steps) < 1:
            raise FeedbackgenError(f"max_episode_steps must be at least 1 (got {self.max_episode_steps})")
        if int(self.record_frames) < 0 or not 8 <= int(self.frame_size) <= 512:
            raise FeedbackgenError("--record-frames must be >= 0 (every K-th step; 0: none) and --frame-size "
                                   f"in [8, 512], got {self.record_frames} and {self.frame_size}")
        set_(self, "record_frames", int(self.record_frames))
        set_(self, "frame_size", int(self.frame_size))
        lo, hi = (float(x) for x in self.switch_range)
        if not 0.0 <= lo <= hi <= 1.0:
            raise FeedbackgenError(f"bad switch range ({lo}, {hi}): need 0 <= LOW <= HIGH <= 1")
        set_(self, "switch_range", (lo, hi))
        if self.frame_episodes is not None and int(self.frame_episodes) < 1:
            raise FeedbackgenError(f"--frame-episodes must be at least 1, got {self.frame_episodes}")
        if self.compression not in (None, "gzip", "lzf"):
            raise FeedbackgenError(f"bad compression {self.compression!r}: use gzip, lzf or none")

    @property
    def is_folder(self) -> bool:
        """True when ``out`` is a dataset folder rather than a single HDF5 file."""
        return self.out.suffix.lower() not in HDF5_SUFFIXES

    def to_dict(self) -> dict:
        """JSON-able record of the configuration."""
        d = asdict(self)
        d["out"] = str(self.out)
        d["policies"] = [{"spec": s, "share": sh} for s, sh in self.policies]
        d["noise"] = list(self.noise)
        d["switch_range"] = list(self.switch_range)
        return d


# ----------------------------------------------------------------------------------------------
# episode plan (depends only on the config, never on the number of workers)


@dataclass(frozen=True)
class EpisodePlan:
    """Everything that fixes one episode: index, policy, noise level, and its seed sequence.

    ``switch_frac``: where a ``switch:`` policy switches, as a fraction of the episode limit (drawn
    for every episode after the other parameters, so it changes none of them).
    """

    index: int
    policy: int
    noise_std: float
    reset_seed: int
    noise_seed: np.random.SeedSequence
    switch_frac: float = 0.0


def episode_counts(shares: list[float], episodes: int) -> list[int]:
    """Split ``episodes`` over policies by share (largest remainder; ties to the earlier policy)."""
    raw = np.asarray(shares, dtype=float) * episodes
    counts = np.floor(raw).astype(int)
    order = sorted(range(len(shares)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: episodes - counts.sum()]:
        counts[i] += 1
    return [int(c) for c in counts]


def plan_episodes(cfg: CollectConfig) -> list[EpisodePlan]:
    """The per-episode plan derived from ``cfg.seed`` with :class:`numpy.random.SeedSequence`."""
    root = np.random.SeedSequence(cfg.seed)
    plan_seq, *episode_seqs = root.spawn(cfg.episodes + 1)
    counts = episode_counts([s for _, s in cfg.policies], cfg.episodes)
    assignment = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(plan_seq).shuffle(assignment)
    plans = []
    lo, hi = cfg.noise
    s_lo, s_hi = cfg.switch_range
    for i, seq in enumerate(episode_seqs):
        params_seq, noise_seq = seq.spawn(2)
        rng = np.random.default_rng(params_seq)
        std = float(rng.uniform(lo, hi)) if hi > lo else lo
        reset_seed = int(rng.integers(0, 2**31 - 1))
        plans.append(EpisodePlan(i, int(assignment[i]), std, reset_seed, noise_seq,
                                 s_lo + (s_hi - s_lo) * float(rng.uniform())))
    return plans


# ----------------------------------------------------------------------------------------------
# behaviour policies


class RandomPolicy:
    """Uniform random actions within the action space's bounds."""

    def __init__(self, action_space) -> None:
        self.low = np.asarray(action_space.low, dtype=np.float64)
        self.high = np.asarray(action_space.high, dtype=np.float64)

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.low, self.high)


def _require_sb3():
    try:
        import stable_baselines3
    except ImportError:
        raise FeedbackgenError("sb3: policies need stable-baselines3: install the 'zoo' extra: "
                               "pip install 'presa-toolkit[zoo]'") from None
    return stable_baselines3


class SB3Policy:
    """A saved stable-baselines3 model acting deterministically (algorithm read from the file)."""

    ALGOS = {"ppo": "PPO", "a2c": "A2C", "sac": "SAC", "td3": "TD3", "ddpg": "DDPG"}

    def __init__(self, path: Path, obs_dim: int, act_dim: int) -> None:
        sb3 = _require_sb3()
        import torch

        torch.set_num_threads(1)
        from stable_baselines3.common.save_util import load_from_zip_file

        try:
            data, _, _ = load_from_zip_file(path, device="cpu", load_data=True)
        except Exception as exc:  # noqa: BLE001 - any failure here means "not an sb3 model"
            raise FeedbackgenError(f"{path} is not a readable stable-baselines3 model ({exc})") from None
        if data is None:  # a zip without the model's 'data' entry
            raise FeedbackgenError(f"{path} is not a readable stable-baselines3 model "
                                   "(the zip has no 'data' entry)")
        module = getattr(data.get("policy_class"), "__module__", "")
        algo_key = module.split(".")[1] if module.count(".") >= 2 else ""
        names = [self.ALGOS[algo_key]] if algo_key in self.ALGOS else ["PPO", "A2C"]
        errors = []
        model = None
        for name in names:
            try:
                model = getattr(sb3, name).load(path, device="cpu")
                break
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{name}: {exc}")
        if model is None:
            raise FeedbackgenError(f"could not load {path} as a stable-baselines3 model "
                                   f"({'; '.join(errors)})")
        self.model = model
        obs_shape = self.model.observation_space.shape
        act_shape = self.model.action_space.shape
        if obs_shape != (obs_dim,) or act_shape != (act_dim,):
            raise FeedbackgenError(f"policy {path} expects observations {obs_shape} and actions {act_shape}, "
                                   f"but the task has ({obs_dim},) and ({act_dim},): use a policy "
                                   "trained on this task")

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        action, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(action, dtype=np.float64)


class IDMDriverPolicy:
    """``idm:SPEED``: MetaDrive's IDM policy on the ego vehicle (made anew at every episode start)."""

    def __init__(self, target_speed: float) -> None:
        self.target_speed = float(target_speed)
        self._act = None

    def begin_episode(self, env, seed: int) -> None:
        """Attach to the ego vehicle of ``env``, just reset."""
        from feedbackgen.sim.metadrive import idm_driver

        self._act = idm_driver(env, self.target_speed, seed)

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._act is None:
            raise FeedbackgenError("idm: policy used before begin_episode")
        return np.asarray(self._act(), dtype=np.float64)


class SwitchPolicy:
    """``switch:A>B``: ``first`` for the episode's first ``switch_step`` steps, then ``second``."""

    def __init__(self, first, second) -> None:
        self.first, self.second = first, second
        self.switch_step, self.t = 0, 0

    def begin(self, switch_step: int) -> None:
        """Start an episode that switches at ``switch_step``."""
        self.switch_step, self.t = int(switch_step), 0

    def begin_episode(self, env, seed: int) -> None:
        """Forward the episode start to the parts that need the env (``idm:``)."""
        for k, part in enumerate((self.first, self.second)):
            if hasattr(part, "begin_episode"):
                part.begin_episode(env, seed + k)

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        policy = self.first if self.t < self.switch_step else self.second
        self.t += 1
        return policy(obs, rng)


def make_policy(spec: str, action_space, obs_dim: int):
    """Build a behaviour policy from its spec (``random``, ``sb3:PATH``, ``presa:PATH``, ``switch:A>B``)."""
    act_dim = int(np.prod(action_space.shape))
    parts = switch_parts(spec)
    if parts:
        return SwitchPolicy(*(make_policy(p, action_space, obs_dim) for p in parts))
    if spec == "random":
        return RandomPolicy(action_space)
    if spec.startswith("idm:"):
        return IDMDriverPolicy(float(spec.split(":", 1)[1]))
    kind, path_text = spec.split(":", 1)
    path = Path(path_text).expanduser()
    if not path.exists():
        raise FeedbackgenError(f"policy file {path} does not exist: check the path in '{spec}'")
    if kind == "sb3":
        return SB3Policy(path, obs_dim, act_dim)
    return get_policy_loader(kind)(path, obs_dim, act_dim)  # presa: registered by presa (see policies)


# ----------------------------------------------------------------------------------------------
# rollouts (run in worker processes or in-process)

_WORKER: dict = {}
SetupArgs = tuple[str, tuple[str, ...], "int | None"]


def _ensure_worker(setup: SetupArgs) -> dict:
    """This process's environment and policies for ``setup`` (made once per worker process)."""
    if _WORKER.get("setup") != setup:
        from feedbackgen.sim import make_env

        if "env" in _WORKER:
            _WORKER["env"].close()
            _WORKER.clear()
        task, specs, max_steps = setup
        env = make_env(task, max_episode_steps=max_steps)
        try:
            if env.max_episode_steps is None:
                raise FeedbackgenError(f"{task} has no episode limit: pass --max-episode-steps")
            obs_dim = int(np.prod(env.observation_space.shape))
            policies = [make_policy(s, env.action_space, obs_dim) for s in specs]
        except BaseException:
            env.close()
            raise
        _WORKER.update(setup=setup, env=env, max_steps=int(env.max_episode_steps), policies=policies)
    return _WORKER


def _probe(setup: SetupArgs) -> dict:
    """Make the env and the policies (validating both) and describe them."""
    env = _ensure_worker(setup)["env"]
    return {"obs_dim": int(np.prod(env.observation_space.shape)),
            "act_dim": int(np.prod(env.action_space.shape)), "max_episode_steps": int(env.max_episode_steps),
            "env_id": env.env_id, "family": env.family, "task": env.task}


def _run_episodes(setup: SetupArgs, plans: list[EpisodePlan], frames: tuple = (0, 0, None)) -> list[dict]:
    _ensure_worker(setup)
    return [_run_episode(p, frames) for p in plans]


def _fresh_env() -> Any:
    """The worker's env, rebuilt when the family carries state from one episode to the next.

    bullet-safety-gym keeps physics state across ``reset`` (Car and Ant joints), so an episode
    would depend on which episodes the same worker ran before it; a new env per episode (about
    0.02-0.2 s) makes every episode a function of its own seed only. Safety-Gymnasium rebuilds its
    world on every reset and MetaDrive regenerates its map from the seed, so their envs are reused.
    """
    env = _WORKER["env"]
    if env.family == "bullet" and _WORKER.get("used"):
        from feedbackgen.sim import make_env

        env.close()
        task, _, max_steps = _WORKER["setup"]
        env = _WORKER["env"] = make_env(task, max_episode_steps=max_steps)
    _WORKER["used"] = True
    return env


def _run_episode(plan: EpisodePlan, frames: tuple = (0, 0, None)) -> dict:
    env, max_steps = _fresh_env(), _WORKER["max_steps"]
    every, size, frame_episodes = frames
    if frame_episodes is not None and plan.index >= frame_episodes:
        every = 0
    frame_steps, frame_images = [], []
    policy = _WORKER["policies"][plan.policy]
    low = np.asarray(env.action_space.low, dtype=np.float64)
    high = np.asarray(env.action_space.high, dtype=np.float64)
    half_range = (high - low) / 2.0
    rng = np.random.default_rng(plan.noise_seed)
    switch_step = int(plan.switch_frac * max_steps) if isinstance(policy, SwitchPolicy) else -1
    if switch_step >= 0:
        policy.begin(switch_step)
    # bullet-safety-gym draws initial states from numpy's global RNG (np.random.uniform), not from
    # the seed given to reset; this worker process exists only to run this simulator, so seeding
    # the global RNG here is what makes the episode a function of its seed.
    np.random.seed(plan.reset_seed)
    obs, _ = env.reset(seed=plan.reset_seed)
    if hasattr(policy, "begin_episode"):
        policy.begin_episode(env, plan.reset_seed)
    obs_l, next_l, act_l, rew_l, cost_l, term_l, trunc_l = [], [], [], [], [], [], []
    for t in range(max_steps):
        obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        if every and t % every == 0:
            from feedbackgen.frames import render_frame

            frame_steps.append(t)
            frame_images.append(render_frame(env, size))
        action = policy(obs, rng)
        if plan.noise_std > 0:
            action = action + rng.normal(0.0, plan.noise_std, size=action.shape) * half_range
        action = np.clip(action, low, high).astype(np.float32)
        nxt, reward, cost, terminated, truncated, _ = env.step(action)
        truncated = bool(truncated) or (t == max_steps - 1 and not terminated)
        obs_l.append(obs)
        next_l.append(np.asarray(nxt, dtype=np.float32).reshape(-1))
        act_l.append(action)
        rew_l.append(float(reward))
        cost_l.append(float(cost))
        term_l.append(bool(terminated))
        trunc_l.append(bool(truncated) and not terminated)
        if terminated or truncated:
            break
        obs = nxt
    return {
        "index": plan.index, "observations": np.stack(obs_l), "next_observations": np.stack(next_l),
        "actions": np.stack(act_l), "rewards": np.asarray(rew_l, np.float32),
        "costs": np.asarray(cost_l, np.float32), "terminations": np.asarray(term_l, bool),
        "truncations": np.asarray(trunc_l, bool), "frame_steps": np.asarray(frame_steps, np.int64),
        "frames": np.asarray(frame_images, np.uint8).reshape(-1, size, size, 3), "switch_step": switch_step,
    }


def _rollout(cfg: CollectConfig, plans: list[EpisodePlan], workers: int,
             progress: ProgressFn | None) -> tuple[dict, list[dict]]:
    """Probe the task in a worker, then run every episode in the pool; ``(probe, results)``.

    Simulators only ever run in worker processes (spawned: clean interpreter state), never in the
    caller's: some cannot coexist in one process (MetaDrive's engine) or touch the caller's streams.
    """
    setup: SetupArgs = (cfg.task, tuple(s for s, _ in cfg.policies), cfg.max_episode_steps)
    total = len(plans)
    chunk = max(1, min(16, total // (workers * 4)))
    batches = [plans[i:i + chunk] for i in range(0, total, chunk)]
    results: list[dict] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        probe = pool.submit(_probe, setup).result()  # a bad task or policy fails here, once
        frames = (cfg.record_frames, cfg.frame_size, cfg.frame_episodes)
        futures = [pool.submit(_run_episodes, setup, b, frames) for b in batches]
        try:
            for fut in futures:
                results.extend(fut.result())
                if progress:
                    progress(len(results), total)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return probe, results


# ----------------------------------------------------------------------------------------------
# record keeping


def _versions(specs: tuple[str, ...]) -> dict:
    names = ["numpy", "h5py", "gymnasium", "bullet-safety-gym", "pybullet", "safety-gymnasium",
             "mujoco", "metadrive-simulator"]
    if any(s.startswith(("sb3:", "presa:", "switch:")) for s in specs):
        names += ["torch", "stable-baselines3"]
    out = {"python": platform.python_version(), "feedbackgen": feedbackgen.__version__}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out


# ----------------------------------------------------------------------------------------------
# entry point


def collect(cfg: CollectConfig, progress: ProgressFn | None = None, select: SelectFn | None = None) -> Path:
    """Roll out the configured behaviour policies and write the dataset.

    Args:
        cfg: what to collect (see :class:`CollectConfig`).
        progress: optional callback ``progress(episodes_done, episodes_total)``.
        select: optional filter run on the collected episodes before anything is written:
            ``select(episode_reward, episode_cost, episode_policy)`` returns the indices of the
            episodes to keep (in any order; they are written in plan order) and a JSON-able
            description recorded as ``selection`` (e.g. a density filter after over-collecting:
            ``cfg.episodes`` is then the pool size).

    Returns:
        The path written: the HDF5 file, or the dataset folder.

    Raises:
        FeedbackgenError: unknown task, missing simulator or policy file, existing output without
            ``overwrite``, or a policy that does not fit the task.
    """
    from feedbackgen.sources import Trajectories, write_dsrl

    out = cfg.out
    if out.exists() and not cfg.overwrite:
        raise FeedbackgenError(f"{out} already exists: pass --overwrite to replace it "
                               "or choose another --out")
    if not out.parent.exists():
        raise FeedbackgenError(f"folder {out.parent} does not exist: create it or choose another --out")
    if cfg.is_folder and out.exists() and not (out / "dataset.json").is_file():
        raise FeedbackgenError(f"{out} exists and is not a dataset folder (no dataset.json): refusing to "
                               "replace it; choose a new folder or a .hdf5 file for --out")
    from feedbackgen.sim import resolve

    resolve(cfg.task)  # an unknown name fails here, before any process starts

    plans = plan_episodes(cfg)
    workers = min(int(cfg.workers or available_cores()), len(plans))
    probe, results = _rollout(cfg, plans, workers, progress)
    results.sort(key=lambda r: r["index"])
    selection = None
    if select is not None:
        keep, selection = select(np.asarray([float(r["rewards"].sum()) for r in results]),
                                 np.asarray([float(r["costs"].sum()) for r in results]),
                                 np.asarray([p.policy for p in plans]))
        keep = np.unique(np.asarray(keep, dtype=np.int64))
        if keep.size == 0:
            raise FeedbackgenError("the episode selection kept no episode: collect more or relax it")
        selection = {"pool_episodes": len(results), "kept_episodes": int(keep.size), **selection,
                     "kept_plan_index": keep.tolist()}
        results, plans = [results[i] for i in keep], [plans[i] for i in keep]
    obs_dim, act_dim, max_steps = probe["obs_dim"], probe["act_dim"], probe["max_episode_steps"]
    task, env_id, family = probe["task"], probe["env_id"], probe["family"]

    lengths = np.asarray([len(r["rewards"]) for r in results], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    cat = {k: np.concatenate([r[k] for r in results]) for k in
           ("observations", "next_observations", "actions", "rewards", "costs", "terminations",
            "truncations")}
    traj = Trajectories(episode_start=starts, episode_length=lengths, **cat)
    ep_reward, ep_cost = traj.episode_returns()

    references = {"min_episode_reward": float(ep_reward.min()), "max_episode_reward": float(ep_reward.max()),
                  "min_episode_cost": float(ep_cost.min()), "max_episode_cost": float(ep_cost.max())}
    policy_of = np.asarray([p.policy for p in plans])
    policies = []
    for i, (spec, share) in enumerate(cfg.policies):
        entry = {"spec": spec, "share": share, "episodes": int((policy_of == i).sum())}
        if spec != "random":
            shas = [sha256_tree(f) for f in policy_files(spec)]
            if shas:
                entry["sha256"] = shas[0] if len(shas) == 1 and not spec.startswith("switch:") else shas
            mask = policy_of == i
            if mask.any():
                entry["mean_episode_reward"] = float(ep_reward[mask].mean())
                entry["mean_episode_cost"] = float(ep_cost[mask].mean())
        policies.append(entry)
    task_name = task.name if task is not None else cfg.task
    base_task = (task.base_task or task.name) if task is not None else None
    record = {
        "task": task_name, "base_task": base_task, "env_id": env_id, "suite": family,
        "episodes": int(len(lengths)), "transitions": int(lengths.sum()),
        "max_episode_steps": max_steps, "obs_dim": obs_dim, "act_dim": act_dim,
        **references,
        "policies": policies,
        "episode_policy": [p.policy for p in plans],
        "episode_noise_std": [round(p.noise_std, 6) for p in plans],
        **({"episode_switch_step": [int(r["switch_step"]) for r in results]}
           if any(s.startswith("switch:") for s, _ in cfg.policies) else {}),
        "noise": {"kind": "gaussian", "std_range": list(cfg.noise), "scale": "fraction of action half-range",
                  "per_episode": True, "clipped": True},
        **({"selection": selection} if selection is not None else {}),
        "seed": cfg.seed, "seeding": "numpy SeedSequence(seed).spawn(episodes + 1); child 0 assigns "
                                     "policies, child i+1 fixes episode i (noise std, reset seed, noise)",
        "config": cfg.to_dict(),
        "versions": _versions(tuple(s for s, _ in cfg.policies)),
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if cfg.version is not None:
        record = {"version": cfg.version, **record}
    attrs = {"feedbackgen_collection": json.dumps(record), **references,
             "task": record["task"], "env_id": str(env_id), "seed": cfg.seed}
    if cfg.version is not None:
        attrs["dataset_version"] = cfg.version

    if cfg.record_frames:
        record["frames"] = {"every": cfg.record_frames, "size": [cfg.frame_size, cfg.frame_size],
                            "episodes": sum(1 for r in results if len(r["frame_steps"])),
                            "count": int(sum(len(r["frame_steps"]) for r in results)),
                            "renderer": "pybullet getCameraImage ER_TINY_RENDERER (CPU, DIRECT), task "
                                        "camera, 2x supersampled", "file": "<data stem>.frames.hdf5"}
    if not cfg.is_folder:
        write_dsrl(out, traj, attrs, compression=cfg.compression)
        if cfg.record_frames:
            _write_frames(out, results, starts, cfg)
        _write_json_atomic(out.with_suffix(".json"), record)
        return out

    name = cfg.name or out.name
    thresholds = list(task.thresholds) if task is not None else list(SUITE_THRESHOLDS[family])
    task_rec = {
        "name": name, "suite": family, "env_id": env_id,
        "max_episode_steps": max_steps, **references, "thresholds": thresholds,
        "dsrl_file": None, "dsrl_env_id": None, "base_task": base_task, "origin": "shipped",
    }
    with atomic_dir(out) as tmp:
        write_dsrl(tmp / "data.hdf5", traj, attrs, compression=cfg.compression)
        if cfg.record_frames:
            _write_frames(tmp / "data.hdf5", results, starts, cfg)
        head = {"version": cfg.version} if cfg.version is not None else {}
        (tmp / "dataset.json").write_text(_dumps({**head, "task": task_rec, "file": "data.hdf5",
                                                  "collection": record}))
    return out


def _write_frames(data_file: Path, results: list[dict], starts: np.ndarray, cfg: CollectConfig) -> Path:
    """The frames sidecar of ``data_file`` (see :mod:`feedbackgen.frames`), keyed by transition index."""
    from feedbackgen.frames import frames_path_for, write_frames
    from feedbackgen.sources import sha256_file

    index = np.concatenate([starts[i] + r["frame_steps"] for i, r in enumerate(results)])
    images = np.concatenate([r["frames"] for r in results])
    attrs = {"every": cfg.record_frames, "size": cfg.frame_size, "data_sha256": sha256_file(data_file),
             "renderer": "pybullet ER_TINY_RENDERER",
             "camera": "task camera (bullet-safety-gym world.camera)"}
    return write_frames(frames_path_for(data_file), index, images, attrs)


def _dumps(obj: dict) -> str:
    """Indented JSON with lists of numbers kept on one line (per-episode lists stay readable)."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s*([-0-9.eE+,\s]+?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


def _write_json_atomic(path: Path, obj: dict) -> None:
    atomic_write_text(path, _dumps(obj))
