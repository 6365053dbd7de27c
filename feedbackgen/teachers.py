"""Scripted preference teachers for the reward channel (the B-Pref family, Lee et al. 2021).

Label convention: for a pair of segments (a, b) the label is **y = P(b ≻ a)**: 1 when b is
preferred, 0 when a is preferred, ½ when the teacher calls them equal.

One :class:`TeacherSpec` describes a composed teacher; the B-Pref teachers are its special cases:

=========  ==========================================  ==============================
teacher    rule                                        spec
=========  ==========================================  ==============================
oracle     y = 1[R(b) > R(a)], ½ on exact ties          ``TeacherSpec()``
bt (β)     y ~ Bernoulli(sigmoid(β·(R(b) − R(a))))      ``TeacherSpec(beta=β)``
myopic(γ)  R(σ) = Σ_t γ^(H−1−t) r_t                     ``TeacherSpec(gamma=γ)``
skip (m)   drop the pair if R(a) < m and R(b) < m       ``TeacherSpec(skip_margin=m)``
equal (m)  y = ½ if |R(b) − R(a)| < m                   ``TeacherSpec(equal_margin=m)``
mistake ε  y → 1 − y with probability ε                 ``TeacherSpec(mistake=ε)``
=========  ==========================================  ==============================

As in B-Pref's reference implementation, ``skip`` and ``equal`` look at the *undiscounted* segment
returns R(σ) = Σ_t r_t, while the preference itself (hard comparison or Bradley–Terry) uses the
myopic return when γ < 1. Mistakes are applied to the teacher's 0/1 decision; an "equal" label
(½) is unchanged by a flip (1 − ½ = ½). The noise-free oracle label always compares the
undiscounted returns.

Randomness: :func:`label_pairs` draws exactly two uniform vectors of length P from ``rng``, in this
order and whatever the configuration: ``u_bt`` (Bradley–Terry sampling, y = 1 iff u_bt < p) and
``u_mistake`` (flip iff u_mistake < ε). So the same seed gives the same flips for ``oracle+mistake``
and ``bt+mistake``, and skipped pairs consume draws like kept ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from feedbackgen.errors import FeedbackgenError, from_known_keys

TEACHER_COMPONENTS = ("oracle", "bt", "myopic", "skip", "equal", "mistake")
# component -> (parameter name in the CLI form, TeacherSpec field, default or None if required)
_COMPONENT_PARAMS: dict[str, tuple[str, str, float | None] | None] = {
    "oracle": None,
    "bt": ("beta", "beta", 1.0),
    "myopic": ("gamma", "gamma", 0.9),
    "skip": ("margin", "skip_margin", None),
    "equal": ("margin", "equal_margin", None),
    "mistake": ("eps", "mistake", None),
}


@dataclass(frozen=True)
class TeacherSpec:
    """A (possibly composed) scripted teacher; see the module docstring for the math.

    Attributes:
        beta: None for a hard (oracle-style) comparison; else the Bradley–Terry rationality β > 0,
            P(b ≻ a) = sigmoid(β·(R(b) − R(a))).
        gamma: myopia, 0 < γ ≤ 1; the teacher's return is Σ_t γ^(H−1−t) r_t (1 = undiscounted).
        skip_margin: drop the pair when both undiscounted returns are below this (None: never).
        equal_margin: y = ½ when the undiscounted returns differ by less than this (None: never;
            must be ≥ 0).
        mistake: probability ε in [0, 1] that the label is flipped (y → 1 − y).

    Example:
        >>> TeacherSpec.parse("myopic:gamma=0.9+mistake:eps=0.1")
        TeacherSpec(beta=None, gamma=0.9, skip_margin=None, equal_margin=None, mistake=0.1)
    """

    beta: float | None = None
    gamma: float = 1.0
    skip_margin: float | None = None
    equal_margin: float | None = None
    mistake: float = 0.0

    def __post_init__(self) -> None:
        if self.beta is not None:
            if not _is_real(self.beta) or self.beta <= 0:
                raise FeedbackgenError(f"teacher beta must be a finite number > 0, got {self.beta!r}")
            object.__setattr__(self, "beta", float(self.beta))
        if not _is_real(self.gamma) or not 0.0 < self.gamma <= 1.0:
            raise FeedbackgenError(f"teacher gamma must be in (0, 1], got {self.gamma!r}")
        object.__setattr__(self, "gamma", float(self.gamma))
        if self.skip_margin is not None:
            if not _is_real(self.skip_margin):
                raise FeedbackgenError(
                    f"teacher skip margin must be a finite number, got {self.skip_margin!r}"
                )
            object.__setattr__(self, "skip_margin", float(self.skip_margin))
        if self.equal_margin is not None:
            if not _is_real(self.equal_margin) or self.equal_margin < 0:
                raise FeedbackgenError(
                    f"teacher equal margin must be a finite number >= 0, got {self.equal_margin!r}"
                )
            object.__setattr__(self, "equal_margin", float(self.equal_margin))
        if not _is_real(self.mistake) or not 0.0 <= self.mistake <= 1.0:
            raise FeedbackgenError(f"teacher mistake probability must be in [0, 1], got {self.mistake!r}")
        object.__setattr__(self, "mistake", float(self.mistake))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for store metadata (every field, None where unset)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeacherSpec:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are an error.

        Raises:
            FeedbackgenError: on unknown keys or invalid values.
        """
        return from_known_keys(cls, d, "teacher spec")

    @classmethod
    def parse(cls, text: str, *, mistake: float = 0.0) -> TeacherSpec:
        """Parse the CLI form: components joined by ``+``, each ``name`` or ``name:key=value``.

        Components: ``oracle``, ``bt:beta=B`` (default β = 1), ``myopic:gamma=G`` (default 0.9),
        ``skip:margin=M``, ``equal:margin=M``, ``mistake:eps=E``. A single value may omit its key
        (``bt:2``). ``mistake`` (the global ``--noise``) is used unless the text has its own
        ``mistake`` component, which wins.

        Args:
            text: e.g. ``"oracle"``, ``"bt:beta=1"``, ``"myopic:gamma=0.9+mistake:eps=0.1"``,
                ``"skip:margin=5+equal:margin=0.1"``.
            mistake: default mistake probability.

        Returns:
            The validated spec.

        Raises:
            FeedbackgenError: on unknown components or keys, repeated components, bad numbers,
                ``oracle`` combined with ``bt``, or out-of-range values.
        """
        if not isinstance(text, str) or not text.strip():
            raise FeedbackgenError(
                f"empty teacher spec; use e.g. 'oracle', 'bt:beta=1' or 'myopic:gamma=0.9+mistake:eps=0.1' "
                f"(components: {', '.join(TEACHER_COMPONENTS)})"
            )
        values: dict[str, Any] = {}
        seen: set[str] = set()
        for part in text.split("+"):
            name, _, arg = part.strip().partition(":")
            name = name.strip().lower()
            if name not in _COMPONENT_PARAMS:
                raise FeedbackgenError(
                    f"unknown teacher component {name!r} in {text!r}; use one of: "
                    f"{', '.join(TEACHER_COMPONENTS)} joined by '+', e.g. 'myopic:gamma=0.9+mistake:eps=0.1'"
                )
            if name in seen:
                raise FeedbackgenError(f"teacher component {name!r} appears twice in {text!r}")
            seen.add(name)
            param = _COMPONENT_PARAMS[name]
            arg = arg.strip()
            if param is None:
                if arg:
                    raise FeedbackgenError(f"teacher component {name!r} takes no parameters, got {arg!r}")
                continue
            key, field_name, default = param
            if not arg:
                if default is None:
                    raise FeedbackgenError(
                        f"teacher component {name!r} needs a value, e.g. '{name}:{key}=0.1'"
                    )
                values[field_name] = default
                continue
            got_key, eq, raw = arg.partition("=")
            if not eq:
                got_key, raw = key, arg
            if got_key.strip().lower() != key:
                raise FeedbackgenError(
                    f"teacher component {name!r} has no parameter {got_key.strip()!r}; "
                    f"use '{name}:{key}=VALUE'"
                )
            try:
                values[field_name] = float(raw)
            except ValueError:
                raise FeedbackgenError(
                    f"teacher component {name!r}: {key}={raw.strip()!r} is not a number"
                ) from None
        if "oracle" in seen and "bt" in seen:
            raise FeedbackgenError(f"teacher spec {text!r} combines 'oracle' and 'bt'; choose one of them")
        values.setdefault("mistake", mistake)
        return cls(**values)


@dataclass
class PreferenceLabels:
    """Labels for P pairs (a, b); y = P(b ≻ a).

    Attributes:
        label: (P,) float32 in {0, 0.5, 1}: the teacher's (noisy) label.
        prob: (P,) float32 the Bradley–Terry P(b ≻ a) = sigmoid(β·ΔR) before mistakes (NaN for hard
            teachers).
        keep: (P,) bool, False for pairs the skip teacher drops (their labels are still filled in).
        oracle: (P,) float32 noise-free label on the undiscounted returns: 1, 0, or 0.5 on ties.
    """

    label: np.ndarray
    prob: np.ndarray
    keep: np.ndarray
    oracle: np.ndarray


def segment_returns(rewards: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Return (P,) float64 segment returns Σ_t γ^(H−1−t) r_t of (P, H) reward windows.

    With γ = 1 this is exactly ``rewards.sum(axis=1)`` (the undiscounted return), so the myopic
    teacher with γ = 1 agrees bit-for-bit with the oracle.
    """
    rewards = np.asarray(rewards)
    if gamma == 1.0:
        return rewards.sum(axis=1, dtype=np.float64)
    weights = float(gamma) ** np.arange(rewards.shape[1] - 1, -1, -1, dtype=np.float64)
    return rewards @ weights


def label_pairs(
    rewards_a: np.ndarray,
    rewards_b: np.ndarray,
    spec: TeacherSpec,
    rng: np.random.Generator,
) -> PreferenceLabels:
    """Label P pairs of segments from their reward windows with the teacher ``spec``.

    Steps (vectorised over pairs): undiscounted returns R₀(a), R₀(b) → oracle label and the
    skip/equal masks; teacher returns R(a), R(b) with myopia γ → hard label 1[R(b) > R(a)] (½ on exact
    ties) or, for β set, y = 1[u_bt < sigmoid(β·(R(b) − R(a)))]; flip where u_mistake < ε; set
    y = ½ where |R₀(b) − R₀(a)| < equal margin; keep = not (R₀(a) < skip and R₀(b) < skip).

    Args:
        rewards_a: (P, H) per-step rewards of the first segment of each pair.
        rewards_b: (P, H) per-step rewards of the second segment.
        spec: the teacher.
        rng: the generator; exactly two vectors of P uniforms are drawn (see module docstring).

    Returns:
        :class:`PreferenceLabels` with y = P(b ≻ a).

    Raises:
        FeedbackgenError: if the windows are not two (P, H) arrays of the same shape, or hold NaN/inf.

    Example:
        >>> import numpy as np
        >>> a, b = np.array([[1.0, 0.0], [2.0, 2.0]]), np.array([[0.0, 2.0], [1.0, 3.0]])
        >>> label_pairs(a, b, TeacherSpec(), np.random.default_rng(0)).label.tolist()
        [1.0, 0.5]
    """
    rewards_a = np.asarray(rewards_a)
    rewards_b = np.asarray(rewards_b)
    if rewards_a.ndim != 2 or rewards_a.shape != rewards_b.shape:
        raise FeedbackgenError(
            f"reward windows must be two (pairs, steps) arrays of the same shape, got {rewards_a.shape} "
            f"and {rewards_b.shape}"
        )
    if rewards_a.shape[1] == 0:
        raise FeedbackgenError("reward windows have no steps; the segment length must be > 0")
    n_pairs = rewards_a.shape[0]
    u_bt = rng.random(n_pairs)
    u_mistake = rng.random(n_pairs)

    ret_a = segment_returns(rewards_a)
    ret_b = segment_returns(rewards_b)
    if not (np.isfinite(ret_a).all() and np.isfinite(ret_b).all()):
        raise FeedbackgenError("reward windows contain NaN or infinite values; check the source's rewards")
    oracle = _hard_label(ret_a, ret_b)

    if spec.gamma == 1.0:
        teach_a, teach_b = ret_a, ret_b
    else:
        teach_a, teach_b = segment_returns(rewards_a, spec.gamma), segment_returns(rewards_b, spec.gamma)

    if spec.beta is None:
        prob = np.full(n_pairs, np.nan)
        label = _hard_label(teach_a, teach_b)
    else:
        prob = _sigmoid(spec.beta * (teach_b - teach_a))
        label = (u_bt < prob).astype(np.float64)

    if spec.mistake > 0.0:
        flip = u_mistake < spec.mistake
        label[flip] = 1.0 - label[flip]
    if spec.equal_margin is not None:
        label[np.abs(ret_b - ret_a) < spec.equal_margin] = 0.5
    if spec.skip_margin is not None:
        keep = ~((ret_a < spec.skip_margin) & (ret_b < spec.skip_margin))
    else:
        keep = np.ones(n_pairs, dtype=bool)
    return PreferenceLabels(label=label.astype(np.float32), prob=prob.astype(np.float32),
                            keep=keep, oracle=oracle.astype(np.float32))


def _hard_label(ret_a: np.ndarray, ret_b: np.ndarray) -> np.ndarray:
    """1 where R(b) > R(a), 0 where less, ½ where equal (float64)."""
    return 0.5 * (1.0 + np.sign(ret_b - ret_a))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def _is_real(x: Any) -> bool:
    """True for a finite int/float (numpy scalars included), False for bools and everything else."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(x)
