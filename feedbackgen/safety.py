"""Safety labels for the cost channel: is a segment within the cost budget, per threshold?

Label convention: **1 = safe, 0 = unsafe**, one column per episode cost threshold κ (in the order
given). For a segment σ of H steps with cost sum C(σ) = Σ_t c_t:

=========  =============================  ================================
rule       safe iff                       per-segment threshold κ_seg
=========  =============================  ================================
scaled     C(σ) ≤ κ · H / T_max           κ · H / T_max (the default)
episode    C(σ) ≤ κ                       κ
zero       no step has c_t > 0            0 (the same label for every κ)
=========  =============================  ================================

Comparisons are exact (no tolerance); κ_seg is computed as ``κ * H / T_max`` in float64. Every
rule gives oracle labels that are monotone in κ: safe at κ₁ implies safe at every κ₂ > κ₁.

Noise models (``SafetySpec.noise``):

- ``none``: the noisy labels are the oracle labels.
- ``flip`` (ε): each label is wrong with probability ε (safe ↔ unsafe).
- ``asymmetric`` (false_safe, false_unsafe): an unsafe label becomes safe with probability
  ``false_safe``; a safe label becomes unsafe with probability ``false_unsafe``.
- ``logistic`` (τ): unsafe with probability sigmoid((C(σ) − κ_seg)/τ), a soft version of the rule
  that errs mostly near the threshold. Needs a cost threshold, so not with the ``zero`` rule.

Noise draws: **one uniform u per segment, shared by all thresholds** (``rng.random(M)``, drawn
whatever the noise model). Flips use u from opposite ends: an unsafe label becomes safe iff
u < false_safe (ε for ``flip``), a safe label becomes unsafe iff u ≥ 1 − false_unsafe. Logistic
labels are unsafe iff u < sigmoid((C − κ_seg)/τ). Why shared rather than independent per
(segment, threshold):

- each column still has exactly the requested noise rates (u is uniform and independent across
  segments), so training on one threshold sees the intended noise channel;
- the labels of a threshold do not depend on which other thresholds are in the store;
- the noisy labels stay monotone in κ: for logistic always (the unsafe probability decreases with
  κ); for flip/asymmetric whenever false_safe + false_unsafe ≤ 1 (then a segment's labels are
  either pushed towards safe or towards unsafe, never both). Independent draws would produce
  self-contradictory rows (safe at κ = 10, unsafe at κ = 20).

The cost of this choice: the errors of one segment are correlated across thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from feedbackgen.errors import FeedbackgenError, from_known_keys

SAFETY_RULES = ("scaled", "episode", "zero")
SAFETY_NOISES = ("none", "flip", "asymmetric", "logistic")


@dataclass(frozen=True)
class SafetySpec:
    """How safety labels are made: the rule and its noise model (see the module docstring).

    Attributes:
        rule: ``scaled`` (C ≤ κ·H/T_max), ``episode`` (C ≤ κ) or ``zero`` (no step with cost > 0).
        noise: ``none``, ``flip``, ``asymmetric`` or ``logistic``.
        eps: symmetric flip probability, in [0, 1] (``flip``).
        false_safe: probability an unsafe segment is labelled safe, in [0, 1] (``asymmetric``).
        false_unsafe: probability a safe segment is labelled unsafe, in [0, 1] (``asymmetric``).
        tau: logistic temperature τ > 0 in cost units (``logistic``).

    Parameters of the noise models not selected are recorded but ignored.

    Example:
        >>> SafetySpec(noise="asymmetric", false_safe=0.1).to_dict()["false_safe"]
        0.1
    """

    rule: str = "scaled"
    noise: str = "flip"
    eps: float = 0.0
    false_safe: float = 0.0
    false_unsafe: float = 0.0
    tau: float = 1.0

    def __post_init__(self) -> None:
        if self.rule not in SAFETY_RULES:
            raise FeedbackgenError(
                f"unknown safety rule {self.rule!r}; use one of: {', '.join(SAFETY_RULES)}"
            )
        if self.noise not in SAFETY_NOISES:
            raise FeedbackgenError(
                f"unknown safety noise {self.noise!r}; use one of: {', '.join(SAFETY_NOISES)}"
            )
        for name in ("eps", "false_safe", "false_unsafe"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise FeedbackgenError(f"safety noise {name} must be a probability in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))
        if not _is_real(self.tau) or self.tau <= 0:
            raise FeedbackgenError(f"safety noise tau must be a finite number > 0, got {self.tau!r}")
        object.__setattr__(self, "tau", float(self.tau))
        if self.noise == "logistic" and self.rule == "zero":
            raise FeedbackgenError(
                "logistic safety noise needs a cost threshold and the 'zero' rule has none; "
                "use rule 'scaled' or 'episode', or noise 'flip'/'asymmetric'"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for store metadata (every field)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SafetySpec:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are an error.

        Raises:
            FeedbackgenError: on unknown keys or invalid values.
        """
        return from_known_keys(cls, d, "safety spec")


def segment_thresholds(thresholds: Any, length: int, max_episode_steps: int, rule: str) -> np.ndarray:
    """Return the (K,) float64 per-segment thresholds κ_seg for episode thresholds κ.

    Args:
        thresholds: (K,) episode cost thresholds κ (finite, ≥ 0).
        length: H, steps per segment (> 0).
        max_episode_steps: T_max (> 0).
        rule: ``scaled`` → κ·H/T_max; ``episode`` → κ; ``zero`` → 0.

    Raises:
        FeedbackgenError: on an unknown rule or invalid values.

    Example:
        >>> segment_thresholds([10, 20, 40], 50, 1000, "scaled").tolist()
        [0.5, 1.0, 2.0]
    """
    if rule not in SAFETY_RULES:
        raise FeedbackgenError(f"unknown safety rule {rule!r}; use one of: {', '.join(SAFETY_RULES)}")
    kappa = _check_thresholds(thresholds)
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length <= 0:
        raise FeedbackgenError(f"segment length must be a positive integer, got {length!r}")
    if isinstance(max_episode_steps, bool) or not _is_real(max_episode_steps) or max_episode_steps <= 0:
        raise FeedbackgenError(f"max episode steps must be a positive integer, got {max_episode_steps!r}")
    if rule == "scaled":
        return kappa * float(length) / float(max_episode_steps)
    if rule == "episode":
        return kappa.copy()
    return np.zeros_like(kappa)


def label_safety(
    cost_windows: np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    spec: SafetySpec,
    *,
    max_episode_steps: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Label M segments as safe (1) or unsafe (0) for each of K thresholds.

    Args:
        cost_windows: (M, H) per-step costs of each segment.
        thresholds: K episode cost thresholds κ; one label column each, in this order.
        spec: the rule and noise model.
        max_episode_steps: T_max of the task (used by the ``scaled`` rule).
        rng: the generator; exactly M uniforms are drawn (one per segment, shared by thresholds).

    Returns:
        ``(labels, oracle)``: (M, K) int8 noisy labels and (M, K) int8 noise-free labels,
        1 = safe, 0 = unsafe.

    Raises:
        FeedbackgenError: on malformed windows (not 2-D, NaN/inf) or invalid thresholds.

    Example:
        >>> import numpy as np
        >>> costs = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
        >>> noisy, oracle = label_safety(costs, [1.0], SafetySpec(rule="episode", noise="none"),
        ...                              max_episode_steps=10, rng=np.random.default_rng(0))
        >>> oracle[:, 0].tolist()
        [1, 1, 0]
    """
    cost_windows = np.asarray(cost_windows)
    if cost_windows.ndim != 2 or cost_windows.shape[1] == 0:
        raise FeedbackgenError(
            f"cost windows must be a (segments, steps) array with steps > 0, got {cost_windows.shape}"
        )
    n_seg, length = cost_windows.shape
    kappa_seg = segment_thresholds(thresholds, length, max_episode_steps, spec.rule)
    u = rng.random((n_seg,))

    cost: np.ndarray = cost_windows.sum(axis=1, dtype=np.float64)
    if not np.isfinite(cost).all():
        raise FeedbackgenError("cost windows contain NaN or infinite values; check the source's costs")
    if spec.rule == "zero":
        safe_row = ~np.any(cost_windows > 0, axis=1)
        oracle = np.broadcast_to(safe_row[:, None], (n_seg, kappa_seg.size))
    else:
        oracle = cost[:, None] <= kappa_seg[None, :]

    if spec.noise == "none":
        noisy = oracle
    elif spec.noise == "logistic":
        p_unsafe = _sigmoid((cost[:, None] - kappa_seg[None, :]) / spec.tau)
        noisy = ~(u[:, None] < p_unsafe)
    else:
        if spec.noise == "flip":
            false_safe, false_unsafe = spec.eps, spec.eps
        else:
            false_safe, false_unsafe = spec.false_safe, spec.false_unsafe
        to_safe = (u < false_safe)[:, None]
        to_unsafe = (u >= 1.0 - false_unsafe)[:, None]
        noisy = np.where(oracle, ~to_unsafe, to_safe)
    return noisy.astype(np.int8), oracle.astype(np.int8)


def _check_thresholds(thresholds: Any) -> np.ndarray:
    try:
        kappa = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError):
        raise FeedbackgenError(f"cost thresholds must be numbers, got {thresholds!r}") from None
    if kappa.ndim != 1 or kappa.size == 0:
        raise FeedbackgenError(f"cost thresholds must be a non-empty list of numbers, got {thresholds!r}")
    if not np.isfinite(kappa).all() or (kappa < 0).any():
        raise FeedbackgenError(f"cost thresholds must be finite and >= 0, got {kappa.tolist()}")
    return kappa


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def _is_real(x: Any) -> bool:
    """True for a finite int/float (numpy scalars included), False for bools and everything else."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(x)
