"""bullet-safety-gym family: ``SafetyBallRun-v0`` and friends (gymnasium 5-tuple, ``info["cost"]``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from feedbackgen.sim.core import GymBackend, quiet_import, require, unknown_env_id


@contextlib.contextmanager
def _process_std_streams() -> Iterator[None]:
    """Point ``sys.stdout``/``sys.stderr`` at the process's own streams for a while.

    bullet-safety-gym silences PyBullet by flushing the C stream named after ``sys.stdout.name``
    (``<stdout>`` -> ``stdout``); a replaced ``sys.stdout`` (pytest's capture, a notebook, a
    StringIO) has another name or no file descriptor, and building the env then fails.
    """
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.__stdout__ if sys.__stdout__ is not None else sys.stdout
    sys.stderr = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


class BulletBackend(GymBackend):
    """bullet-safety-gym env with its own random stream.

    bullet-safety-gym ignores ``reset(seed=...)`` and draws from numpy's global legacy generator
    (``np.random.uniform``). This backend gives each env a private ``RandomState``: around every
    call into the simulator that can draw, it swaps that state into ``np.random`` and the caller's
    state back out, so ``reset(seed)`` is reproducible and the caller's global generator is left
    untouched. Resets always draw; a step draws only when the task moves its goal after reaching
    it (``continue_after_goal_achievement``: Reach, Push), so only those steps pay for the swap
    (about 0.4 ms with numpy 2.3).
    """

    def __init__(self, env: Any, *, rng_state: Any):
        super().__init__(env, cost_in_info=True)
        self._rng_state = rng_state
        task = getattr(env.unwrapped, "task", None)
        self._step_draws = bool(getattr(task, "continue_after_goal_achievement", True))

    def _call(self, fn: Any, *args: Any) -> Any:
        outer = np.random.get_state()
        np.random.set_state(self._rng_state)
        try:
            return fn(*args)
        finally:
            self._rng_state = np.random.get_state()
            np.random.set_state(outer)

    def reset(self, seed: int | None) -> tuple[np.ndarray, dict]:
        """Reset; ``seed`` re-seeds this env's private stream (None continues it)."""
        if seed is not None:
            self._rng_state = np.random.RandomState(int(seed) % 2**32).get_state()
        return self._call(self.env.reset)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        """Step (inside this env's random stream when the task can draw during a step)."""
        if self._step_draws:
            return self._call(super().step, action)
        return super().step(action)


def open_backend(env_id: str, max_episode_steps: int | None, overrides: dict[str, Any]) -> GymBackend:
    """Make a bullet-safety-gym env.

    Args:
        env_id: a registered bullet-safety-gym id.
        max_episode_steps: gymnasium's TimeLimit length (None: the registered one).
        overrides: extra ``gymnasium.make`` keyword arguments.

    Raises:
        FeedbackgenError: bullet-safety-gym is not installed, or the id is unknown.
    """
    require("bullet_safety_gym", "bullet")  # registers its ids with gymnasium
    gymnasium = quiet_import("gymnasium")
    known = [k for k, spec in gymnasium.registry.items()
             if str(spec.entry_point).startswith("bullet_safety_gym")]
    if env_id not in known:
        raise unknown_env_id(env_id, "bullet", known)
    kwargs = dict(overrides)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    outer = np.random.get_state()
    try:
        # Construction may draw from np.random too: give it a fresh stream, keep the caller's.
        np.random.set_state(np.random.RandomState().get_state())
        with _process_std_streams():
            env = gymnasium.make(env_id, **kwargs)
        return BulletBackend(env, rng_state=np.random.get_state())
    finally:
        np.random.set_state(outer)
