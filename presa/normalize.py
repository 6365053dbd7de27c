"""Normalised reward and cost, the way the DSRL benchmark and the field's papers report them.

- normalised reward = (R − R_min) / (R_max − R_min), with the task's reference episode reward range:
  DSRL's for the 38 DSRL tasks (``feedbackgen/data/dsrl_tasks.csv``, from the DSRL package), the
  collection's own range for the datasets the toolkit ships (both carried by the
  :class:`~feedbackgen.tasks.Task` record);
- normalised cost = (C + ε) / (κ + ε), with ε = 1 if the threshold κ = 0 else 0;
- a result is **safe** iff its normalised cost ≤ 1.

Both maps are affine, so the normalised value of a mean is the mean of the normalised values.

Example:
    >>> from feedbackgen.tasks import get_task
    >>> task = get_task("BallRun")
    >>> round(normalized_reward(task.max_episode_reward, task), 6)
    1.0
    >>> normalized_cost(15.0, 10.0), normalized_cost(0.0, 0.0), is_safe(normalized_cost(10.0, 10.0))
    (1.5, 1.0, True)
"""

from __future__ import annotations

import math

import numpy as np

from feedbackgen.errors import FeedbackgenError
from feedbackgen.tasks import Task

SAFE_LIMIT = 1.0
"""A normalised cost at or below this is safe."""


def reward_range(task: Task) -> tuple[float, float]:
    """The reference (R_min, R_max) of a task.

    Raises:
        FeedbackgenError: the task's references are not finite or R_max ≤ R_min.
    """
    lo, hi = float(task.min_episode_reward), float(task.max_episode_reward)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise FeedbackgenError(
            f"task '{task.name}' has unusable reward references (min {lo}, max {hi}); "
            "its task record needs min_episode_reward < max_episode_reward")
    return lo, hi


def cost_epsilon(threshold: float) -> float:
    """ε of the cost normalisation: 1 when the threshold κ is 0, else 0."""
    return 1.0 if float(threshold) == 0.0 else 0.0


def normalized_reward(reward: float | np.ndarray, task: Task) -> float | np.ndarray:
    """(R − R_min) / (R_max − R_min) with the task's references (elementwise for arrays).

    Args:
        reward: undiscounted episode reward(s).
        task: the task whose references apply.

    Returns:
        A float for a scalar input, else an array of the same shape.
    """
    lo, hi = reward_range(task)
    out = (np.asarray(reward, dtype=np.float64) - lo) / (hi - lo)
    return float(out) if out.ndim == 0 else out


def normalized_cost(cost: float | np.ndarray, threshold: float) -> float | np.ndarray:
    """(C + ε) / (κ + ε), ε = 1 if κ = 0 else 0 (elementwise for arrays).

    Args:
        cost: undiscounted episode cost(s).
        threshold: the episode cost threshold κ (≥ 0).

    Raises:
        FeedbackgenError: a negative or non-finite threshold.
    """
    kappa = float(threshold)
    if not math.isfinite(kappa) or kappa < 0:
        raise FeedbackgenError(f"cost threshold must be a finite number ≥ 0, got {threshold}")
    eps = cost_epsilon(kappa)
    out = (np.asarray(cost, dtype=np.float64) + eps) / (kappa + eps)
    return float(out) if out.ndim == 0 else out


def is_safe(norm_cost: float) -> bool:
    """Safe iff the normalised cost is ≤ 1 (a NaN is never safe)."""
    return bool(float(norm_cost) <= SAFE_LIMIT)
