"""The uniform environment wrapper, the name resolution and the lazy-import helper.

Every family module (``bullet``, ``safety_gym``, ``metadrive``) turns a simulator env id into a
:class:`Backend`; :class:`SafeEnv` wraps a backend into one API. The wrapper casts observations to
float32, returns reward and cost as Python floats, enforces truncation at ``max_episode_steps``
and refuses ``step`` before ``reset`` or after the end of an episode.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from feedbackgen.errors import FeedbackgenError
from feedbackgen.tasks import Task, all_tasks, get_task


@dataclass(frozen=True)
class Family:
    """One simulator family: its package name, the pip extra that installs it, its module."""

    name: str  # family id, equal to Task.suite
    package: str  # distribution name users know
    extra: str  # pyproject extra that installs it
    make_target: str  # the make target that installs it


FAMILIES: dict[str, Family] = {
    "bullet": Family("bullet", "bullet-safety-gym", "bullet", "make install"),
    "safety_gymnasium": Family("safety_gymnasium", "safety-gymnasium", "safety-gymnasium",
                               "make install-all"),
    "metadrive": Family("metadrive", "metadrive-simulator", "metadrive", "make install-all"),
}

# gymnasium-robotics (a safety-gymnasium dependency) prints this notice on every `import gymnasium`.
_GYM_NOTICE = "environment's reward functions were updated in v1.2.1"


def require(module: str, family: str, importer: Callable[[str], ModuleType] | None = None) -> ModuleType:
    """Import ``module`` for simulator ``family`` or fail with one line that names the extra.

    Args:
        module: the module to import.
        family: key of :data:`FAMILIES`, for the message.
        importer: how to import (default ``importlib.import_module``); safety-gymnasium passes
            its compatibility shim.

    Raises:
        FeedbackgenError: the module (or one of its dependencies) cannot be imported.
    """
    fam = FAMILIES[family]
    try:
        return quiet_import(module, importer)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        what = "is not installed" if missing in (None, module, module.split(".")[0]) \
            else f"cannot be imported (missing module '{missing}')"
        raise FeedbackgenError(
            f"{fam.package} {what}; install the '{fam.extra}' extra: "
            f"pip install -e '.[{fam.extra}]' (or {fam.make_target})") from None


def quiet_import(module: str, importer: Callable[[str], ModuleType] | None = None) -> ModuleType:
    """Import ``module``, dropping gymnasium-robotics' version notice from stderr."""
    if importer is None and sys.modules.get(module) is not None:
        return sys.modules[module]
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            return (importer or importlib.import_module)(module)
    finally:
        kept = [line for line in buf.getvalue().splitlines(keepends=True) if _GYM_NOTICE not in line]
        if kept:
            sys.stderr.write("".join(kept))


def float32_box(space: Any) -> Any:
    """The same Box with float32 dtype (bounds cast), the dtype :class:`SafeEnv` returns."""
    from gymnasium.spaces import Box

    if not isinstance(space, Box):
        raise FeedbackgenError(f"unsupported space {space!r}: the simulator layer handles Box spaces only")
    return Box(low=space.low.astype(np.float32), high=space.high.astype(np.float32),
               shape=space.shape, dtype=np.float32)


class Backend(Protocol):
    """What a family module provides: one simulator env behind a fixed internal protocol.

    Attributes:
        observation_space: the simulator's observation Box.
        action_space: the simulator's action Box.
        spec_max_episode_steps: the simulator's own episode limit (None if it has none).
    """

    observation_space: Any
    action_space: Any
    spec_max_episode_steps: int | None

    def reset(self, seed: int | None) -> tuple[np.ndarray, dict]:
        """Start an episode; ``seed`` None continues the current random stream."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        """One step: (obs, reward, cost, terminated, truncated, info)."""

    def close(self) -> None:
        """Release the simulator."""


class GymBackend:
    """Backend over a gymnasium-style env (bullet-safety-gym, safety-gymnasium).

    Args:
        env: the made env.
        cost_in_info: True for the gymnasium 5-tuple with the cost in ``info["cost"]`` (bullet);
            False for safety-gymnasium's 6-tuple (obs, reward, cost, terminated, truncated, info).
    """

    def __init__(self, env: Any, *, cost_in_info: bool):
        self.env = env
        self.cost_in_info = cost_in_info
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        spec = getattr(env, "spec", None)
        self.spec_max_episode_steps = getattr(spec, "max_episode_steps", None)

    def reset(self, seed: int | None) -> tuple[np.ndarray, dict]:
        """Reset the wrapped env (gymnasium seeding: ``seed`` re-seeds its np_random)."""
        return self.env.reset(seed=seed)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        """Step the wrapped env and return the 6-tuple."""
        if self.cost_in_info:
            obs, reward, terminated, truncated, info = self.env.step(action)
            if "cost" not in info:
                raise FeedbackgenError("the simulator returned no info['cost']; this bullet-safety-gym "
                                       "build is not supported (install the 'bullet' extra's version)")
            cost = info["cost"]
        else:
            obs, reward, cost, terminated, truncated, info = self.env.step(action)
        return obs, float(reward), float(cost), bool(terminated), bool(truncated), info

    def close(self) -> None:
        """Close the wrapped env."""
        self.env.close()


class SafeEnv:
    """A constrained environment with one API for every simulator family.

    Attributes:
        env_id: the simulator env id (``SafetyBallRun-v0``, ``SafeMetaDrive-easysparse``).
        family: ``bullet``, ``safety_gymnasium`` or ``metadrive``.
        task: the task this env belongs to, or None for an env id that is not in the task table.
        max_episode_steps: where episodes are truncated (the task's T_max when known).
        observation_space: float32 Box of observations.
        action_space: float32 Box of actions.
    """

    def __init__(self, backend: Backend, *, env_id: str, family: str, task: Task | None,
                 max_episode_steps: int | None, seed: int | None = None):
        self._backend = backend
        self.env_id = env_id
        self.family = family
        self.task = task
        self.max_episode_steps = max_episode_steps
        self.observation_space = float32_box(backend.observation_space)
        self.action_space = float32_box(backend.action_space)
        self._act_dtype = backend.action_space.dtype
        self._pending_seed = seed
        self._t = 0
        self._needs_reset = True
        self._closed = False

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode.

        Args:
            seed: seeds the simulator's randomness; the same seed gives the same first
                observation. None continues the random stream (the first reset uses the ``seed``
                given to :func:`make_env`, if any).

        Returns:
            (observation as float32 array, info dict).
        """
        self._check_open()
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        obs, info = self._backend.reset(None if seed is None else int(seed))
        self._t = 0
        self._needs_reset = False
        return np.asarray(obs, dtype=np.float32), dict(info)

    def step(self, action: Any) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        """Advance one step.

        Returns:
            (obs, reward, cost, terminated, truncated, info); reward and cost are floats, and
            ``info["cost"]`` holds the same cost.

        Raises:
            FeedbackgenError: no episode is running, or the action has the wrong shape.
        """
        self._check_open()
        if self._needs_reset:
            raise FeedbackgenError("step() called without a running episode; call reset() first "
                                   "(after reset, and again after every terminated/truncated step)")
        act = np.asarray(action, dtype=self._act_dtype)
        if act.shape != self.action_space.shape:
            raise FeedbackgenError(f"action of shape {act.shape} for {self.env_id}, which expects "
                                   f"{self.action_space.shape}; pass one action per step")
        obs, reward, cost, terminated, truncated, info = self._backend.step(act)
        self._t += 1
        terminated, truncated = bool(terminated), bool(truncated)
        if self.max_episode_steps is not None and self._t >= self.max_episode_steps and not terminated:
            truncated = True
        info = dict(info)
        info["cost"] = float(cost)
        self._needs_reset = terminated or truncated
        return np.asarray(obs, dtype=np.float32), float(reward), float(cost), terminated, truncated, info

    @property
    def elapsed_steps(self) -> int:
        """Steps taken in the current episode."""
        return self._t

    def close(self) -> None:
        """Release the simulator (idempotent)."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    def _check_open(self) -> None:
        if self._closed:
            raise FeedbackgenError(f"environment {self.env_id} is closed; make a new one with make_env()")

    def __enter__(self) -> SafeEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        name = self.task.name if self.task else None
        return (f"SafeEnv(env_id={self.env_id!r}, family={self.family!r}, task={name!r}, "
                f"max_episode_steps={self.max_episode_steps})")


# --- name resolution -------------------------------------------------------------------------

_BULLET_RE = re.compile(r"^Safety(Ball|Car|Drone|Ant)(Run|Circle|Gather|Reach|Push)-v\d+$")
_BULLET_AGENT_RE = re.compile(r"^Safety(Ball|Car|Drone|Ant)[A-Za-z]+$")
_METADRIVE_RE = re.compile(r"^SafeMetaDrive-[\w-]+$")
_SG_GYMNASIUM_TWIN = re.compile(r"^(Safety\w+?)Gymnasium(-v\d+)$")


def family_of_env_id(env_id: str) -> str | None:
    """The simulator family an env id belongs to, from its spelling (None if none fits).

    safety-gymnasium names carry a level digit or ``Velocity`` (``SafetyCarCircle1-v0``,
    ``SafetyAntVelocity-v1``); bullet-safety-gym names do not (``SafetyCarCircle-v0``).
    """
    if _METADRIVE_RE.match(env_id):
        return "metadrive"
    if not (env_id.startswith("Safety") and re.search(r"-v\d+$", env_id)):
        return None
    name = env_id.rsplit("-v", 1)[0]
    if _BULLET_RE.match(env_id) or (_BULLET_AGENT_RE.match(name) and not re.search(r"\d|Velocity", name)):
        return "bullet"
    return "safety_gymnasium"


def canonical_env_id(env_id: str, family: str) -> str:
    """Normalise spellings that name the same simulator env (``…Gymnasium-v0`` twins, ``-v0``)."""
    if family == "safety_gymnasium":
        m = _SG_GYMNASIUM_TWIN.match(env_id)
        if m:
            return m.group(1) + m.group(2)
    if family == "metadrive":
        return env_id.removesuffix("-v0")
    return env_id


def resolve(task: str | Task) -> tuple[Task | None, str, str]:
    """Map a task name / Task / simulator env id to (task or None, env id, family).

    Raises:
        FeedbackgenError: nothing known has that name.
    """
    if isinstance(task, Task):
        if task.suite not in FAMILIES:
            raise FeedbackgenError(f"task {task.name} has unknown suite '{task.suite}'; "
                                   f"expected one of {', '.join(FAMILIES)}")
        return task, canonical_env_id(task.env_id, task.suite), task.suite
    if not isinstance(task, str) or not task:
        raise FeedbackgenError(f"task must be a task name or simulator env id, got {task!r}")
    try:
        found = get_task(task)
    except FeedbackgenError:
        found = None
    if found is not None:
        return resolve(found)
    family = family_of_env_id(task)
    if family is None:
        close = difflib.get_close_matches(task, list(all_tasks()), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise FeedbackgenError(
            f"unknown task or environment id '{task}'{hint}; give a task name (`feedbackgen tasks` "
            "lists them) or a simulator env id like SafetyBallRun-v0, SafetyPointGoal1-v0, "
            "SafeMetaDrive-easysparse")
    env_id = canonical_env_id(task, family)
    # An env id spelled differently from the table (e.g. a -v0 suffix) may still be a known task.
    for t in all_tasks().values():
        if t.origin == "dsrl" and t.env_id == env_id:
            return t, env_id, family
    return None, env_id, family


def unknown_env_id(env_id: str, family: str, known: list[str]) -> FeedbackgenError:
    """The one-line error for an env id the simulator does not register."""
    close = difflib.get_close_matches(env_id, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return FeedbackgenError(f"unknown {FAMILIES[family].package} env id '{env_id}'{hint}; "
                            "check the spelling or use a task name from `feedbackgen tasks`")


def make_env(task: str | Task, *, seed: int | None = None, max_episode_steps: int | None = None,
             **overrides: Any) -> SafeEnv:
    """Open the simulator of a task or env id behind the uniform :class:`SafeEnv` API.

    Args:
        task: a DSRL task name (``BallRun``, ``PointGoal1``, ``easysparse``), a shipped task
            (``BallRun-mini``), a :class:`~feedbackgen.tasks.Task`, or a simulator env id
            (``SafetyBallRun-v0``, ``SafetyPointGoal1-v0``, ``SafetyAntVelocity-v1``,
            ``SafeMetaDrive-easysparse``).
        seed: seed of the first ``reset()`` called without one (seeding happens only in reset).
        max_episode_steps: truncation length; default the task's T_max, else the simulator's.
        **overrides: passed to the simulator: ``gymnasium.make`` keyword arguments for bullet
            and safety-gymnasium, config entries for MetaDrive.

    Raises:
        FeedbackgenError: unknown name, or the simulator is not installed.
    """
    from feedbackgen.sim import bullet, metadrive, safety_gym

    resolved_task, env_id, family = resolve(task)
    openers: dict[str, Callable[[str, int | None, dict[str, Any]], Backend]] = {
        "bullet": bullet.open_backend, "safety_gymnasium": safety_gym.open_backend,
        "metadrive": metadrive.open_backend}
    opener = openers[family]
    limit = max_episode_steps if max_episode_steps is not None else (
        resolved_task.max_episode_steps if resolved_task is not None else None)
    if limit is not None and int(limit) < 1:
        raise FeedbackgenError(f"max_episode_steps must be >= 1, got {limit}")
    backend = opener(env_id, limit, overrides)
    if limit is None:
        limit = backend.spec_max_episode_steps
    return SafeEnv(backend, env_id=env_id, family=family, task=resolved_task,
                   max_episode_steps=None if limit is None else int(limit), seed=seed)
