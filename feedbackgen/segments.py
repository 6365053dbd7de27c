"""Segments: H consecutive steps inside one episode, and the per-step windows they cover.

A segment never crosses an episode boundary. The default (and so far only) sampling method,
``uniform``, picks an episode uniformly among those with at least H steps, then a start uniformly
among the ``length - H + 1`` positions inside it. Segment starts are *global* transition indices
(``episode_start[e] + offset``), so ``values[start:start + H]`` is the segment's window of any
per-step array (rewards, costs).

Example:
    >>> import numpy as np
    >>> start, length = np.array([0, 5]), np.array([5, 3])
    >>> ep, seg_start, seg_len = sample_segments(start, length, 4, 4, np.random.default_rng(0))
    >>> ep.tolist(), seg_len.tolist()   # only episode 0 has >= 4 steps
    ([0, 0, 0, 0], [4, 4, 4, 4])
    >>> gather_windows(np.arange(8.0), np.array([1, 4]), 3).tolist()
    [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from feedbackgen.errors import FeedbackgenError

SEGMENT_METHODS = ("uniform",)
_DEFAULT_LENGTH = 20
_CHUNK_ROWS = 1 << 20


@dataclass(frozen=True)
class SegmentSpec:
    """How segments are sampled: their length H and the sampling method.

    Exactly one of ``length`` and ``fraction`` is set. Because ``length`` defaults to 20, giving
    only ``fraction`` (``SegmentSpec(fraction=0.1)``) means "use the fraction": a ``length`` left at
    its default is then cleared to ``None``. Any other ``length`` together with ``fraction`` is an
    error.

    Attributes:
        length: H in steps (> 0), or None when ``fraction`` is used.
        fraction: H as a fraction of the task's max episode length, in (0, 1]:
            ``H = round(fraction * T_max)`` (at least 1).
        method: sampling method; ``uniform`` chooses episodes with length >= H uniformly, then a
            start uniformly inside the chosen episode.
    """

    length: int | None = _DEFAULT_LENGTH
    fraction: float | None = None
    method: str = "uniform"

    def __post_init__(self) -> None:
        if self.fraction is not None and self.length == _DEFAULT_LENGTH:
            object.__setattr__(self, "length", None)
        if (self.length is None) == (self.fraction is None):
            raise FeedbackgenError(
                "segment spec: give exactly one of a segment length (steps) or a segment fraction "
                "(of the max episode length), not both or neither"
            )
        if self.length is not None:
            if isinstance(self.length, bool) or not isinstance(self.length, (int, np.integer)):
                raise FeedbackgenError(f"segment length must be a whole number of steps, got {self.length!r}")
            if self.length <= 0:
                raise FeedbackgenError(f"segment length must be > 0 steps, got {self.length}")
            object.__setattr__(self, "length", int(self.length))
        if self.fraction is not None:
            if not _is_real(self.fraction) or not 0.0 < float(self.fraction) <= 1.0:
                raise FeedbackgenError(
                    f"segment fraction must be in (0, 1] (of the max episode length), got {self.fraction!r}"
                )
            object.__setattr__(self, "fraction", float(self.fraction))
        if self.method not in SEGMENT_METHODS:
            raise FeedbackgenError(
                f"unknown segment sampling method {self.method!r}; use one of: {', '.join(SEGMENT_METHODS)}"
            )

    def resolve(self, max_episode_steps: int) -> int:
        """Return H in steps for a task whose max episode length is ``max_episode_steps``.

        Args:
            max_episode_steps: T_max of the task (> 0).

        Returns:
            ``length`` if set, else ``round(fraction * max_episode_steps)``.

        Raises:
            FeedbackgenError: if T_max is not positive or the fraction rounds to 0 steps.

        Example:
            >>> SegmentSpec(fraction=0.05).resolve(1000)
            50
        """
        if isinstance(max_episode_steps, bool) or not _is_real(max_episode_steps) or max_episode_steps <= 0:
            raise FeedbackgenError(f"max episode steps must be a positive integer, got {max_episode_steps!r}")
        if self.length is not None:
            return self.length
        assert self.fraction is not None
        steps = int(round(self.fraction * max_episode_steps))
        if steps < 1:
            raise FeedbackgenError(
                f"segment fraction {self.fraction} of {max_episode_steps} max episode steps rounds to "
                "0 steps; use a larger --segment-fraction or a --segment-length"
            )
        return steps

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for store metadata: ``{"method", "length", "fraction"}``."""
        return {"method": self.method, "length": self.length, "fraction": self.fraction}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        Raises:
            FeedbackgenError: on unknown keys or invalid values.
        """
        unknown = sorted(set(d) - {"method", "length", "fraction"})
        if unknown:
            raise FeedbackgenError(f"segment spec: unknown keys {unknown}; expected method, length, fraction")
        length = d.get("length")
        fraction = d.get("fraction")
        if fraction is not None and length is None:
            return cls(length=None, fraction=fraction, method=d.get("method", "uniform"))
        return cls(length=_DEFAULT_LENGTH if length is None else length, fraction=fraction,
                   method=d.get("method", "uniform"))


def sample_segments(
    episode_start: np.ndarray,
    episode_length: np.ndarray,
    n: int,
    length: int,
    rng: np.random.Generator,
    episodes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``n`` segments of ``length`` steps, each inside one episode.

    Episodes with at least ``length`` steps (among ``episodes``, if given) are chosen uniformly
    (with replacement), then a start offset uniformly in ``[0, episode_length - length]``. Random
    numbers are drawn in a fixed order: first the ``n`` episode choices, then the ``n`` offsets.

    Args:
        episode_start: (E,) global index of each episode's first transition.
        episode_length: (E,) number of steps in each episode.
        n: number of segments (>= 0).
        length: H, steps per segment (> 0).
        rng: the generator all draws come from.
        episodes: optional ids of the episodes to draw from (e.g. one side of a train/validation
            split); None means every episode.

    Returns:
        ``(segment_episode, segment_start, segment_length)``: (n,) int32 episode ids, (n,) int64
        global transition index of each segment's first step, (n,) int32 lengths (all ``length``).

    Raises:
        FeedbackgenError: on malformed inputs, or when no episode has at least ``length`` steps (the
            message names the longest episode and suggests a smaller ``--segment-length``).
    """
    episode_start = np.asarray(episode_start)
    episode_length = np.asarray(episode_length)
    if episode_start.ndim != 1 or episode_start.shape != episode_length.shape:
        raise FeedbackgenError(
            f"episode_start {episode_start.shape} and episode_length {episode_length.shape} must be "
            "1-D arrays of the same length"
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise FeedbackgenError(f"number of segments must be a non-negative integer, got {n!r}")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length <= 0:
        raise FeedbackgenError(f"segment length must be a positive integer, got {length!r}")
    if episode_length.size == 0:
        raise FeedbackgenError("cannot sample segments: the source has no episodes")
    eligible = np.flatnonzero(episode_length >= length)
    if eligible.size == 0:
        longest = int(np.argmax(episode_length))
        max_len = int(episode_length[longest])
        raise FeedbackgenError(
            f"no episode has at least {length} steps (the longest, episode {longest}, has {max_len}); "
            f"use a smaller --segment-length (at most {max_len})"
        )
    if episodes is not None:
        eligible = np.intersect1d(eligible, np.asarray(episodes, dtype=np.int64))
        if eligible.size == 0:
            if n == 0:
                return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int32)
            raise FeedbackgenError(f"none of the {np.size(episodes)} episodes to sample from has at least "
                                   f"{length} steps")
    episode = eligible[rng.integers(0, eligible.size, size=int(n))]
    span = episode_length[episode].astype(np.int64) - int(length) + 1
    offset = rng.integers(0, span) if n > 0 else np.zeros(0, dtype=np.int64)
    start = episode_start[episode].astype(np.int64) + offset.astype(np.int64)
    return (episode.astype(np.int32), start.astype(np.int64),
            np.full(int(n), int(length), dtype=np.int32))


def gather_windows(values: Any, segment_start: np.ndarray, length: int, *,
                   chunk_rows: int = _CHUNK_ROWS) -> np.ndarray:
    """Return the (S, H) float64 windows ``values[start:start + H]`` of a per-step array.

    ``values`` may be a numpy array (fancy-indexed directly) or a lazy dataset that supports
    ``shape`` and slicing (h5py, zarr). Datasets are read in ascending order of segment start, one
    contiguous slice per block of starts spanning at most ``chunk_rows`` rows, and only where
    segments lie, so each source row is read about once and memory stays O(S·H + chunk_rows).

    Args:
        values: (N,) per-step values (rewards or costs).
        segment_start: (S,) global index of each segment's first step.
        length: H (> 0).
        chunk_rows: rows of the source read per slice for lazy datasets.

    Returns:
        (S, H) float64 array; row i is ``values[segment_start[i]:segment_start[i] + H]``.

    Raises:
        FeedbackgenError: if ``values`` is not 1-D or a window falls outside it.
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length <= 0:
        raise FeedbackgenError(f"segment length must be a positive integer, got {length!r}")
    if chunk_rows <= 0:
        raise FeedbackgenError(f"chunk_rows must be positive, got {chunk_rows}")
    length = int(length)
    shape = tuple(getattr(values, "shape", np.shape(values)))
    if len(shape) != 1:
        raise FeedbackgenError(f"per-step values must be a 1-D array, got shape {shape}")
    n_rows = int(shape[0])
    start = np.asarray(segment_start, dtype=np.int64).reshape(-1)
    out = np.empty((start.size, length), dtype=np.float64)
    if start.size == 0:
        return out
    if int(start.min()) < 0 or int(start.max()) + length > n_rows:
        raise FeedbackgenError(
            f"segment windows fall outside the per-step array of {n_rows} rows "
            f"(starts {int(start.min())}..{int(start.max())}, length {length}); the segments do not "
            "belong to this source"
        )
    steps = np.arange(length, dtype=np.int64)
    if isinstance(values, np.ndarray):
        out[...] = values[start[:, None] + steps[None, :]]
        return out
    order = np.argsort(start, kind="stable")
    sorted_start = start[order]
    i = 0
    while i < sorted_start.size:
        lo = int(sorted_start[i])
        j = int(np.searchsorted(sorted_start, lo + chunk_rows, side="left"))
        hi = int(sorted_start[j - 1]) + length
        block = np.asarray(values[lo:hi], dtype=np.float64)
        out[order[i:j]] = block[(sorted_start[i:j] - lo)[:, None] + steps[None, :]]
        i = j
    return out


def _is_real(x: Any) -> bool:
    """True for a finite int/float (numpy scalars included), False for bools and everything else."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(x)
