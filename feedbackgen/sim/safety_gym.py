"""safety-gymnasium family: navigation (``SafetyPointGoal1-v0``) and velocity
(``SafetyAntVelocity-v1``) tasks through their plain ids, which return a 6-tuple
(obs, reward, cost, terminated, truncated, info).

safety-gymnasium 1.0.0 does not import on Python 3.11 without
:mod:`feedbackgen.sim.safety_gymnasium_compat`; this module always imports it through that shim.
"""

from __future__ import annotations

from typing import Any

from feedbackgen.sim.core import GymBackend, require, unknown_env_id
from feedbackgen.sim.safety_gymnasium_compat import import_safety_gymnasium


def open_backend(env_id: str, max_episode_steps: int | None, overrides: dict[str, Any]) -> GymBackend:
    """Make a safety-gymnasium env by its plain id.

    Args:
        env_id: a plain safety-gymnasium id (not the ``…Gymnasium-v0`` twin).
        max_episode_steps: episode limit (None: the registered one).
        overrides: extra ``safety_gymnasium.make`` keyword arguments.

    Raises:
        FeedbackgenError: safety-gymnasium is not installed, or the id is unknown.
    """
    sg = require("safety_gymnasium", "safety_gymnasium", importer=lambda _name: import_safety_gymnasium())
    from safety_gymnasium.utils.registration import safe_registry

    if env_id not in safe_registry:
        raise unknown_env_id(env_id, "safety_gymnasium", sorted(safe_registry))
    kwargs = dict(overrides)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    return GymBackend(sg.make(env_id, **kwargs), cost_in_info=False)
