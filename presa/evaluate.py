"""Roll trained policies out in the task's real simulator and score them (DSRL protocol).

The policy acts with its mean action (``Actor(obs) -> action``, from :func:`presa.checkpoint.load_actor`)
for ``episodes`` episodes, truncated at the task's ``max_episode_steps``. Undiscounted episode reward,
cost and length are recorded per episode and normalised with :mod:`presa.normalize`: the reward
with the task's references, the cost for the run's threshold and, for reference, for every
customary threshold of the task.

Episodes run in parallel in worker processes (``spawn`` start method: torch and the simulators are
not fork-safe). Each worker loads the actor and builds its own environment once and reuses them.
Episode ``i`` always resets with :func:`episode_seed` ``(seed, i)``, so the per-episode results do
not depend on how many workers ran them.

Example:
    >>> from presa.evaluate import evaluate, write_eval_json     # doctest: +SKIP
    >>> result = evaluate("runs/demo", episodes=5, seed=0)        # doctest: +SKIP
    >>> result.normalized_reward, result.normalized_cost, result.safe   # doctest: +SKIP
    >>> write_eval_json("runs/demo", result)                      # doctest: +SKIP
    PosixPath('runs/demo/eval/eval-seed0-n5.json')

Checkpoint selection during training (``presa train --eval-every N``): the run's policy is the
**final** checkpoint (``checkpoints/final.pt``); the periodic evaluations are logged as ``eval/...``
metrics for monitoring only and never pick a checkpoint, because choosing the best checkpoint by
its online return would leak online information into an offline method.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from feedbackgen._io import atomic_write_json, available_cores, json_safe
from feedbackgen.errors import FeedbackgenError
from feedbackgen.tasks import Task, get_task
from presa.normalize import is_safe, normalized_cost, normalized_reward

EVAL_SCHEMA = "presa-eval/1"
"""The ``schema`` field of every evaluation JSON."""

SIM_PACKAGES = {
    "bullet": ("bullet-safety-gym", "pybullet", "gymnasium"),
    "safety_gymnasium": ("safety-gymnasium", "mujoco", "gymnasium"),
    "metadrive": ("metadrive-simulator", "gymnasium"),
}
"""Simulator packages whose versions are stamped into an evaluation, per suite."""

ProgressFn = Callable[[int, int], None]
"""``progress(done_episodes, total_episodes)``, called as episodes finish."""


# --------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class EpisodeResult:
    """One evaluation episode.

    Attributes:
        index: episode number within the evaluation (0-based).
        seed: the seed the environment was reset with (:func:`episode_seed`).
        reward: undiscounted episode reward R.
        cost: undiscounted episode cost C.
        length: number of steps taken.
        terminated: whether the episode ended by termination (else truncation).
    """

    index: int
    seed: int
    reward: float
    cost: float
    length: int
    terminated: bool


@dataclass(frozen=True)
class ThresholdScore:
    """Cost scores of one evaluation for one threshold κ.

    Attributes:
        threshold: κ.
        normalized_cost: mean over episodes of the normalised cost.
        normalized_cost_std: its standard deviation over episodes (ddof 0).
        safe: ``normalized_cost <= 1``.
        safe_episodes: fraction of episodes whose own normalised cost is ≤ 1.
    """

    threshold: float
    normalized_cost: float
    normalized_cost_std: float
    safe: bool
    safe_episodes: float


@dataclass(frozen=True)
class EvalResult:
    """The outcome of :func:`evaluate`.

    Attributes:
        task: the task evaluated in (its references normalise the reward).
        threshold: the cost threshold the run was trained for (the headline scores use it).
        seed: the evaluation seed.
        episodes: per-episode results, in episode order.
        method: the training algorithm (``presa``, ``bc_all``, ...) when the checkpoint says.
        checkpoint: the checkpoint file evaluated, when known.
        run_dir: the run directory the checkpoint belongs to, when known.
        step: the training step of the checkpoint, when known.
        train_seed: the training seed of the run, when known.
        trained_task: the task the checkpoint was trained on (differs from ``task.name`` when the
            evaluation was asked for another task).
        versions: package versions (simulator, numpy, torch, toolkit).
        workers: number of worker processes used.
        wall_s: wall-clock seconds of the rollouts.
        extra: further JSON-able facts about the run (store id, config name, ...).
    """

    task: Task
    threshold: float
    seed: int
    episodes: tuple[EpisodeResult, ...]
    method: str | None = None
    checkpoint: str | None = None
    run_dir: str | None = None
    step: int | None = None
    train_seed: int | None = None
    trained_task: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.episodes:
            raise FeedbackgenError("an evaluation needs at least one episode; pass --episodes ≥ 1")

    # per-episode arrays
    @property
    def rewards(self) -> np.ndarray:
        """Episode rewards, shape (N,)."""
        return np.array([e.reward for e in self.episodes], dtype=np.float64)

    @property
    def costs(self) -> np.ndarray:
        """Episode costs, shape (N,)."""
        return np.array([e.cost for e in self.episodes], dtype=np.float64)

    @property
    def lengths(self) -> np.ndarray:
        """Episode lengths, shape (N,)."""
        return np.array([e.length for e in self.episodes], dtype=np.int64)

    # headline numbers
    @property
    def reward(self) -> float:
        """Mean episode reward."""
        return float(self.rewards.mean())

    @property
    def cost(self) -> float:
        """Mean episode cost."""
        return float(self.costs.mean())

    @property
    def normalized_rewards(self) -> np.ndarray:
        """Per-episode normalised rewards."""
        return np.asarray(normalized_reward(self.rewards, self.task), dtype=np.float64)

    @property
    def normalized_reward(self) -> float:
        """Mean normalised reward over the episodes."""
        return float(self.normalized_rewards.mean())

    @property
    def normalized_cost(self) -> float:
        """Mean normalised cost over the episodes, for the run's threshold."""
        return self.score(self.threshold).normalized_cost

    @property
    def safe(self) -> bool:
        """Whether the mean normalised cost for the run's threshold is ≤ 1."""
        return self.score(self.threshold).safe

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The run's threshold and every customary threshold of the task, sorted."""
        return tuple(sorted({float(self.threshold), *map(float, self.task.thresholds)}))

    def score(self, threshold: float) -> ThresholdScore:
        """The cost scores for threshold κ."""
        per_ep = np.asarray(normalized_cost(self.costs, threshold), dtype=np.float64)
        mean = float(per_ep.mean())
        return ThresholdScore(threshold=float(threshold), normalized_cost=mean,
                              normalized_cost_std=float(per_ep.std()), safe=is_safe(mean),
                              safe_episodes=float(np.mean(per_ep <= 1.0)))

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (what ``presa eval --json`` prints and :func:`write_eval_json` writes)."""
        nr = self.normalized_rewards
        nc = np.asarray(normalized_cost(self.costs, self.threshold))
        head = self.score(self.threshold)
        return {
            "schema": EVAL_SCHEMA,
            "task": self.task.name, "suite": self.task.suite, "env_id": self.task.env_id,
            "method": self.method, "threshold": float(self.threshold),
            "normalized_reward": float(nr.mean()), "normalized_reward_std": float(nr.std()),
            "normalized_cost": head.normalized_cost, "normalized_cost_std": head.normalized_cost_std,
            "safe": head.safe,
            "reward": self.reward, "reward_std": float(self.rewards.std()),
            "cost": self.cost, "cost_std": float(self.costs.std()),
            "length": float(self.lengths.mean()),
            "episodes": len(self.episodes), "seed": int(self.seed),
            "per_threshold": [_score_dict(self.score(k)) for k in self.thresholds],
            "per_episode": {
                "seed": [e.seed for e in self.episodes],
                "reward": [e.reward for e in self.episodes],
                "cost": [e.cost for e in self.episodes],
                "length": [e.length for e in self.episodes],
                "terminated": [e.terminated for e in self.episodes],
                "normalized_reward": [float(x) for x in nr],
                "normalized_cost": [float(x) for x in nc],
            },
            "references": {"min_episode_reward": self.task.min_episode_reward,
                           "max_episode_reward": self.task.max_episode_reward,
                           "origin": self.task.origin},
            "checkpoint": self.checkpoint, "run_dir": self.run_dir, "step": self.step,
            "train_seed": self.train_seed, "trained_task": self.trained_task,
            "versions": dict(self.versions),
            "workers": self.workers, "wall_s": self.wall_s, "extra": dict(self.extra),
            "task_record": self.task.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_dict` (the derived numbers are recomputed from the episodes).

        Raises:
            FeedbackgenError: the record is not a presa evaluation.
        """
        if d.get("schema") != EVAL_SCHEMA:
            raise FeedbackgenError(f"not a presa evaluation record (schema {d.get('schema')!r}, "
                                   f"expected {EVAL_SCHEMA!r}); re-run `presa eval`")
        try:
            pe = d["per_episode"]
            episodes = tuple(
                EpisodeResult(index=i, seed=int(s), reward=float(r), cost=float(c), length=int(n),
                              terminated=bool(t))
                for i, (s, r, c, n, t) in enumerate(zip(pe["seed"], pe["reward"], pe["cost"],
                                                        pe["length"], pe["terminated"], strict=True)))
            return cls(task=Task.from_dict(d["task_record"]), threshold=float(d["threshold"]),
                       seed=int(d["seed"]), episodes=episodes, method=d.get("method"),
                       checkpoint=d.get("checkpoint"), run_dir=d.get("run_dir"), step=d.get("step"),
                       train_seed=d.get("train_seed"), trained_task=d.get("trained_task"),
                       versions=dict(d.get("versions") or {}),
                       workers=int(d.get("workers", 1)), wall_s=float(d.get("wall_s", 0.0)),
                       extra=dict(d.get("extra") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise FeedbackgenError(f"evaluation record is incomplete ({exc!r}); "
                                   "re-run `presa eval`") from None


def _score_dict(s: ThresholdScore) -> dict[str, Any]:
    return {"threshold": s.threshold, "normalized_cost": s.normalized_cost,
            "normalized_cost_std": s.normalized_cost_std, "safe": s.safe, "safe_episodes": s.safe_episodes}


# ------------------------------------------------------------------------------------- seeding


def episode_seed(seed: int, index: int) -> int:
    """The environment seed of episode ``index`` of an evaluation with seed ``seed``.

    Derived with :class:`numpy.random.SeedSequence` (entropy ``seed``, spawn key ``(index,)``), so
    episodes get well-separated, reproducible seeds that do not depend on the number of workers.
    """
    if seed < 0 or index < 0:
        raise FeedbackgenError(f"evaluation seed and episode index must be ≥ 0 (got {seed}, {index})")
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(index),))
    return int(ss.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


# ------------------------------------------------------------------------------ checkpoint paths


def resolve_final_checkpoint(path: str | os.PathLike[str]) -> tuple[Path, Path | None]:
    """Map ``RUN_DIR`` or a checkpoint file to ``(checkpoint_file, run_dir_or_None)``.

    A run directory means its ``checkpoints/final.pt`` (never an intermediate one; compare
    :func:`presa.checkpoint.resolve_latest_checkpoint`); a file inside ``RUN_DIR/checkpoints/``
    belongs to that run.

    Raises:
        FeedbackgenError: the path does not exist or a run directory has no final checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        final = p / "checkpoints" / "final.pt"
        if not final.is_file():
            raise FeedbackgenError(f"{p} has no checkpoints/final.pt; pass a checkpoint file "
                                   "(RUN_DIR/checkpoints/step_*.pt) or let training finish")
        return final, p
    if not p.is_file():
        raise FeedbackgenError(f"{p} does not exist; pass a run directory or a checkpoint file (.pt)")
    if p.parent.name == "checkpoints" and (p.parent.parent / "run.json").is_file():
        return p, p.parent.parent
    return p, None


def simulator_versions(suite: str) -> dict[str, str]:
    """Installed versions of the suite's simulator packages and of numpy, torch and the toolkit."""
    names = (*SIM_PACKAGES.get(suite, ()), "numpy", "torch", "presa-toolkit")
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# ------------------------------------------------------------------------------------ rollouts


def _make_env(task: Task):
    from feedbackgen.sim import make_env  # lazy: the simulators are heavy

    return make_env(task)


def _resolve_task(task: str | Task | None, actor) -> Task:
    if task is None:
        if getattr(actor, "task", None) is None:
            raise FeedbackgenError("the checkpoint records no task (its store had none); "
                                   "name the task to evaluate in with --task")
        return actor.task
    return task if isinstance(task, Task) else get_task(task)


def check_compatible(actor, env, task: Task, source: str) -> None:
    """Raise a one-line error when the actor's observation/action sizes do not match the env's.

    Raises:
        FeedbackgenError: observation or action size mismatch.
    """
    obs_shape = tuple(env.observation_space.shape or ())
    act_shape = tuple(env.action_space.shape or ())
    env_obs = int(np.prod(obs_shape)) if obs_shape else 0
    env_act = int(np.prod(act_shape)) if act_shape else 0
    if int(actor.obs_dim) != env_obs:
        raise FeedbackgenError(
            f"checkpoint {source} expects {actor.obs_dim}-dim observations but task '{task.name}' "
            f"({task.env_id}) gives {env_obs}; {_advice(actor, task)}")
    if int(actor.act_dim) != env_act:
        raise FeedbackgenError(
            f"checkpoint {source} outputs {actor.act_dim}-dim actions but task '{task.name}' "
            f"({task.env_id}) takes {env_act}; {_advice(actor, task)}")


def _advice(actor, task: Task) -> str:
    trained = getattr(actor, "task", None)
    if trained is None or trained.name == task.name:
        return ("its training data does not come from this simulator; train on a store made from "
                "this task's data")
    return f"evaluate it on the task it was trained on ('{trained.name}')"


def run_episode(actor, env, *, index: int, seed: int, max_steps: int) -> EpisodeResult:
    """Roll one episode out with the actor's mean action.

    Args:
        actor: a callable ``(1, obs_dim) float32 -> (1, act_dim)``.
        env: a :class:`feedbackgen.sim` environment (6-tuple step API).
        index: the episode number (recorded only).
        seed: the reset seed.
        max_steps: truncate after this many steps.

    Actions are clipped to the action space's bounds before stepping.
    """
    low = np.asarray(env.action_space.low, dtype=np.float32)
    high = np.asarray(env.action_space.high, dtype=np.float32)
    obs, _ = env.reset(seed=int(seed))
    total_r = total_c = 0.0
    steps = 0
    terminated = False
    while steps < max_steps:
        action = np.asarray(actor(np.asarray(obs, dtype=np.float32).reshape(1, -1)), dtype=np.float32)
        action = np.clip(action.reshape(low.shape), low, high)
        obs, r, c, terminated, truncated, _ = env.step(action)
        total_r += float(r)
        total_c += float(c)
        steps += 1
        if terminated or truncated:
            break
    return EpisodeResult(index=int(index), seed=int(seed), reward=total_r, cost=total_c, length=steps,
                         terminated=bool(terminated))


@dataclass(frozen=True)
class _ActorRef:
    """How a worker gets the actor: a checkpoint path, or the pickled actor itself."""

    key: str
    path: str | None = None
    blob: bytes | None = None


class _Runner:
    """Caches one actor and one environment per task inside a worker process."""

    def __init__(self) -> None:
        self.actor_key: str | None = None
        self.actor: Any = None  # loaded from the checkpoint, or the actor the caller passed (pickled)
        self.envs: dict[str, Any] = {}
        self.checked: set[tuple[str, str]] = set()

    def get_actor(self, ref: _ActorRef) -> Any:
        if ref.key != self.actor_key:
            if ref.path is not None:
                from presa.checkpoint import load_actor

                self.actor = load_actor(ref.path, device="cpu")
            else:
                assert ref.blob is not None  # a reference holds a path or a blob
                self.actor = pickle.loads(ref.blob)  # noqa: S301 - bytes pickled by our own parent
            self.actor_key = ref.key
        return self.actor

    def prepare(self, ref: _ActorRef, task: Task | None) -> tuple[Any, Any, Task]:
        """Load the actor, open (or reuse) the env of the task, check that they fit."""
        actor = self.get_actor(ref)
        the_task = _resolve_task(task, actor)
        env = self.envs.get(the_task.name)
        if env is None:
            env = self.envs[the_task.name] = _make_env(the_task)
        if (ref.key, the_task.name) not in self.checked:
            check_compatible(actor, env, the_task, ref.path or "(in-memory actor)")
            self.checked.add((ref.key, the_task.name))
        return actor, env, the_task

    def info(self, ref: _ActorRef, task: Task | None) -> dict[str, Any]:
        actor, _, the_task = self.prepare(ref, task)
        return {"task": the_task.to_dict(), "threshold": float(actor.threshold),
                "trained_task": actor.task.name if getattr(actor, "task", None) is not None else None,
                "meta": dict(getattr(actor, "meta", {}) or {})}

    def run(self, ref: _ActorRef, task: Task, index: int, seed: int) -> EpisodeResult:
        actor, env, the_task = self.prepare(ref, task)
        max_steps = int(the_task.max_episode_steps)
        env_max = getattr(env, "max_episode_steps", None)
        if env_max:
            max_steps = min(max_steps, int(env_max))
        return run_episode(actor, env, index=index, seed=seed, max_steps=max_steps)


_WORKER_RUNNER: _Runner | None = None

_PRELOAD = ["presa.checkpoint", "feedbackgen.sim"]
"""Modules the fork server imports once (torch among them), so workers start without re-importing."""


# The fork server listens on a Unix socket under the temporary folder (``<tmp>/pymp-XXXXXXXX/
# listener-XXXXXXXX``), and a Unix socket path has at most 107 bytes on Linux: with a long $TMPDIR
# the fork server cannot start ("AF_UNIX path too long"), so workers are spawned instead.
_UNIX_SOCKET_PATH_MAX = 107
_FORKSERVER_SOCKET_SUFFIX = len("/pymp-xxxxxxxx/listener-xxxxxxxx")


def _mp_context():
    """``forkserver`` where available (a clean process that imports torch once and forks workers from
    it: fast starts, no inherited threads or simulator state), else ``spawn`` (also when the
    temporary folder's path is too long for the fork server's Unix socket)."""
    socket_fits = len(os.fsencode(tempfile.gettempdir())) + _FORKSERVER_SOCKET_SUFFIX <= _UNIX_SOCKET_PATH_MAX
    if socket_fits and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def _worker_init() -> None:
    global _WORKER_RUNNER
    import torch

    # Anything a simulator prints goes to stderr: stdout belongs to the caller (`presa eval --json`).
    sys.stdout.flush()
    os.dup2(2, 1)
    torch.set_num_threads(1)  # one process per core: intra-op threads would only contend
    _WORKER_RUNNER = _Runner()


def _worker_info(ref: _ActorRef, task_record: dict | None) -> dict[str, Any]:
    assert _WORKER_RUNNER is not None
    return _WORKER_RUNNER.info(ref, Task.from_dict(task_record) if task_record else None)


def _worker_episode(ref: _ActorRef, task_record: dict, index: int, seed: int) -> EpisodeResult:
    assert _WORKER_RUNNER is not None
    return _WORKER_RUNNER.run(ref, Task.from_dict(task_record), index, seed)


def default_workers(episodes: int) -> int:
    """Worker processes to use: one per available core, at most one per episode."""
    return max(1, min(available_cores(), episodes))


class Evaluator:
    """Evaluates policies, keeping its worker processes (and their environments) between calls.

    Use it where many evaluations follow each other (evaluation during training); :func:`evaluate`
    is the one-shot form. The simulators and the policy run only in the worker processes (a
    ``spawn`` pool started on first use, ``workers=1`` included): some simulators cannot share a
    process (MetaDrive's engine), and none may write into the caller's standard output. For a
    checkpoint path the calling process does not even import torch; the workers load the
    checkpoint and open their environments in parallel.

    Example:
        >>> with Evaluator(workers=2) as ev:                       # doctest: +SKIP
        ...     a = ev.evaluate("runs/a", episodes=10, seed=0)
        ...     b = ev.evaluate("runs/b", episodes=10, seed=0)
    """

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise FeedbackgenError(f"workers must be ≥ 1, got {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pool_size = 0
        self._counter = 0

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (their environments close with them)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _get_pool(self, n: int) -> ProcessPoolExecutor:
        if self._pool is None or self._pool_size != n:
            self.close()
            self._pool = ProcessPoolExecutor(max_workers=n, mp_context=_mp_context(),
                                             initializer=_worker_init)
            self._pool_size = n
        return self._pool

    def evaluate(self, actor_or_path, *, episodes: int = 20, seed: int = 0, task: str | Task | None = None,
                 progress: ProgressFn | None = None) -> EvalResult:
        """Roll the policy out for ``episodes`` episodes and score it.

        Args:
            actor_or_path: a run directory (its ``checkpoints/final.pt``), a checkpoint file, or an
                ``Actor`` (:func:`presa.checkpoint.load_actor`).
            episodes: number of episodes (≥ 1).
            seed: evaluation seed; episode ``i`` resets with ``episode_seed(seed, i)``.
            task: evaluate in this task instead of the one the checkpoint was trained on.
            progress: called with ``(done, total)`` as episodes finish.

        Returns:
            The :class:`EvalResult`.

        Raises:
            FeedbackgenError: bad arguments, a missing checkpoint or simulator, or a checkpoint
                whose observation/action size does not match the task's environment.
        """
        if episodes < 1:
            raise FeedbackgenError(f"episodes must be ≥ 1, got {episodes}")
        if seed < 0:
            raise FeedbackgenError(f"seed must be ≥ 0, got {seed}")
        checkpoint: Path | None = None
        run_dir: Path | None = None
        if isinstance(actor_or_path, (str, os.PathLike)):
            checkpoint, run_dir = resolve_final_checkpoint(actor_or_path)
            ref = _ActorRef(key=f"{checkpoint.resolve()}:{checkpoint.stat().st_mtime_ns}",
                            path=str(checkpoint))
        else:
            self._counter += 1
            ref = _ActorRef(key=f"live-{os.getpid()}-{id(self)}-{self._counter}",
                            blob=pickle.dumps(actor_or_path))
        override = None if task is None else (task if isinstance(task, Task) else get_task(task))
        n_workers = min(self.workers or default_workers(episodes), episodes)
        t0 = time.perf_counter()
        pool = self._get_pool(n_workers)
        record = override.to_dict() if override is not None else None
        # every worker loads the actor and opens its env at once; the first answer says what runs
        probes = [pool.submit(_worker_info, ref, record) for _ in range(n_workers)]
        info = self._result(probes[0], probes)
        the_task = Task.from_dict(info["task"])
        seeds = [episode_seed(seed, i) for i in range(episodes)]
        results = self._run_episodes(pool, ref, the_task, seeds, progress)
        for p in probes[1:]:
            self._result(p, probes)
        wall = time.perf_counter() - t0
        meta = info["meta"]
        return EvalResult(
            task=the_task, threshold=float(info["threshold"]), seed=int(seed), episodes=tuple(results),
            method=_meta_method(meta), checkpoint=str(checkpoint) if checkpoint else None,
            run_dir=str(run_dir) if run_dir else None, step=_meta_int(meta, "step"),
            train_seed=_meta_train_seed(meta), trained_task=info["trained_task"],
            versions=simulator_versions(the_task.suite), workers=n_workers, wall_s=wall,
            extra=_meta_extra(meta))

    def _result(self, fut: Future, others: Sequence[Future]):
        try:
            return fut.result()
        except BrokenProcessPool:
            for f in others:
                f.cancel()
            self._pool = None
            raise FeedbackgenError("an evaluation worker process died (the simulator crashed or ran "
                                   "out of memory); re-run with --workers 1 and read the messages above"
                                   ) from None
        except BaseException:
            for f in others:
                f.cancel()
            raise

    def _run_episodes(self, pool: ProcessPoolExecutor, ref: _ActorRef, task: Task, seeds: Sequence[int],
                      progress: ProgressFn | None) -> list[EpisodeResult]:
        record = task.to_dict()
        futures = [pool.submit(_worker_episode, ref, record, i, s) for i, s in enumerate(seeds)]
        index = {f: i for i, f in enumerate(futures)}
        results: dict[int, EpisodeResult] = {}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                results[index[fut]] = self._result(fut, futures)  # re-raises a worker's error
            if progress is not None:
                progress(len(results), len(seeds))
        return [results[i] for i in range(len(seeds))]


def evaluate(actor_or_path, *, episodes: int = 20, seed: int = 0, workers: int | None = None,
             progress: ProgressFn | None = None, task: str | Task | None = None) -> EvalResult:
    """Evaluate a policy once (see :meth:`Evaluator.evaluate`).

    Args:
        actor_or_path: a run directory, a checkpoint file, or an ``Actor``.
        episodes: number of episodes (20 in the DSRL protocol).
        seed: evaluation seed.
        workers: worker processes; ``None`` uses one per available core (at most one per episode).
        progress: called with ``(done, total)`` as episodes finish.
        task: evaluate in this task instead of the checkpoint's own.
    """
    with Evaluator(workers) as ev:
        return ev.evaluate(actor_or_path, episodes=episodes, seed=seed, task=task, progress=progress)


# ------------------------------------------------------------------- evaluation during training


EVAL_METRICS = ("normalized_reward", "normalized_reward_std", "normalized_cost", "normalized_cost_std",
                "reward", "cost", "length", "safe")
"""The ``eval/<name>`` metrics :class:`EvalEvery` logs."""


class EvalEvery:
    """Trainer callback of ``presa train --eval-every N``: evaluate the current policy periodically.

    Every ``every`` steps and at the last step it takes the trainer's checkpoint payload of the
    current weights (``TrainEvent.checkpoint``), rolls it out with an :class:`Evaluator` (worker
    processes kept between evaluations) and

    - appends ``{"step": n, "eval/normalized_reward": ..., "eval/normalized_cost": ..., ...}`` to
      ``RUN_DIR/metrics.jsonl`` (see :data:`EVAL_METRICS`);
    - writes the evaluation JSON into ``RUN_DIR/eval/``: ``eval-step_<N>-seed<S>-n<E>.json`` for
      periodic ones, and for the last step the same file ``presa eval RUN_DIR`` would write (its
      policy is exactly ``final.pt``'s).

    Checkpoint selection: the run's policy stays the **final** checkpoint; these evaluations are
    for monitoring and never choose a checkpoint (that would use online returns to tune an
    offline method).

    Args:
        run_dir: the run directory the trainer writes.
        every: evaluate every this many steps (≥ 1).
        episodes: episodes per evaluation.
        seed: evaluation seed (the same episodes every time, so evaluations are comparable).
        workers: worker processes (None: one per core).
        then: another callback to call first with every event (e.g. a progress bar).
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, every: int, episodes: int = 10, seed: int = 0,
                 workers: int | None = None, then: Callable[[Any], None] | None = None) -> None:
        if every < 1:
            raise FeedbackgenError(f"--eval-every must be ≥ 1 (steps), got {every}")
        if episodes < 1:
            raise FeedbackgenError(f"--eval-episodes must be ≥ 1, got {episodes}")
        self.run_dir = Path(run_dir)
        self.every, self.episodes, self.seed = int(every), int(episodes), int(seed)
        self.then = then
        self.evaluator = Evaluator(workers)
        self.results: list[EvalResult] = []

    def __enter__(self) -> EvalEvery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the evaluation workers."""
        self.evaluator.close()

    def __call__(self, event) -> None:
        if self.then is not None:
            self.then(event)
        last = event.step == event.total_steps
        if event.step % self.every != 0 and not last:
            return
        if getattr(event, "checkpoint", None) is None:
            raise FeedbackgenError("this trainer does not expose its current weights to callbacks; "
                                   "evaluate the run afterwards with `presa eval RUN_DIR`")
        from presa.checkpoint import final_checkpoint_path, save_checkpoint, step_checkpoint_path

        with tempfile.TemporaryDirectory(prefix="presa-eval-") as tmp:
            path = save_checkpoint(Path(tmp) / f"step_{event.step:07d}.pt", event.checkpoint())
            result = self.evaluator.evaluate(path, episodes=self.episodes, seed=self.seed)
        label = (final_checkpoint_path(self.run_dir) if last
                 else step_checkpoint_path(self.run_dir, event.step))
        result = replace(result, checkpoint=str(label), run_dir=str(self.run_dir), step=int(event.step))
        write_eval_json(self.run_dir, result)
        record = result.to_dict()
        row = {"step": int(event.step), **{f"eval/{k}": float(record[k]) for k in EVAL_METRICS}}
        with open(self.run_dir / "metrics.jsonl", "a") as log:
            log.write(json.dumps(json_safe(row)) + "\n")
        self.results.append(result)


@contextlib.contextmanager
def eval_callback(run_dir: str | os.PathLike[str], every: int | None, *, episodes: int = 10, seed: int = 0,
                  workers: int | None = None, then: Callable[[Any], None] | None = None) -> Iterator[Any]:
    """The training callback for ``presa train``: ``then`` alone when ``every`` is 0/None, else an
    :class:`EvalEvery` chained after it (its workers are stopped on exit)."""
    if not every:
        yield then
        return
    with EvalEvery(run_dir, every=every, episodes=episodes, seed=seed, workers=workers, then=then) as cb:
        yield cb


# ---------------------------------------------------------------------------------- metadata


def _meta_method(meta: dict) -> str | None:
    for key in ("method", "algo"):
        if meta.get(key):
            return str(meta[key])
    cfg = meta.get("config") or {}
    for key in ("method", "algo"):
        if isinstance(cfg, dict) and cfg.get(key):
            return str(cfg[key])
    return None


def _meta_int(meta: dict, key: str) -> int | None:
    val = meta.get(key)
    try:
        return int(val) if val is not None else None
    except (TypeError, ValueError):
        return None


def _meta_train_seed(meta: dict) -> int | None:
    if meta.get("seed") is not None:
        return _meta_int(meta, "seed")
    cfg = meta.get("config") or {}
    return _meta_int(cfg, "seed") if isinstance(cfg, dict) else None


def _meta_extra(meta: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("store_id", "run_name", "name"):
        if isinstance(meta.get(key), (str, int, float)):
            out[key] = meta[key]
    return out


# ------------------------------------------------------------------------------------- output


def eval_filename(result: EvalResult) -> str:
    """``eval-seed<S>-n<N>.json`` for a final checkpoint, ``eval-<stem>-seed<S>-n<N>.json`` otherwise."""
    stem = Path(result.checkpoint).stem if result.checkpoint else "final"
    tag = "" if stem == "final" else f"{stem}-"
    other = "" if result.trained_task in (None, result.task.name) else f"{result.task.name}-"
    return f"eval-{other}{tag}seed{result.seed}-n{len(result.episodes)}.json"


def write_eval_json(run_dir: str | os.PathLike[str], result: EvalResult) -> Path:
    """Write ``RUN_DIR/eval/<eval_filename>`` atomically (temp sibling, then rename).

    Returns:
        The path written. An earlier evaluation with the same name is replaced.
    """
    out_dir = Path(run_dir) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / eval_filename(result)
    record = result.to_dict()
    record["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    return atomic_write_json(path, json_safe(record))


def read_eval_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one evaluation JSON (validated to be a presa evaluation).

    Raises:
        FeedbackgenError: unreadable or not a presa evaluation record.
    """
    p = Path(path)
    try:
        record = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise FeedbackgenError(f"cannot read evaluation {p} ({exc}); re-run `presa eval`") from None
    if not isinstance(record, dict) or record.get("schema") != EVAL_SCHEMA:
        raise FeedbackgenError(f"{p} is not a presa evaluation record; re-run `presa eval`")
    return record


