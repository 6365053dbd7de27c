"""Simulator layer: one ``make_env(task)`` for bullet-safety-gym, safety-gymnasium and metadrive.

>>> env = make_env("BallRun")               # doctest: +SKIP
>>> obs, info = env.reset(seed=0)           # doctest: +SKIP
>>> obs, reward, cost, terminated, truncated, info = env.step(env.action_space.sample())  # doctest: +SKIP

Simulators are imported lazily, on the first ``make_env`` of their family; a missing one is a
:class:`~feedbackgen.errors.FeedbackgenError` that names the extra to install.
"""

from feedbackgen.sim.core import FAMILIES, SafeEnv, make_env, resolve

__all__ = ["FAMILIES", "SafeEnv", "make_env", "resolve"]
