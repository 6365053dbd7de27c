"""Label-quality summary stored with every feedback store (``quality`` attribute).

Fields (all plain JSON):

- ``preference_agreement``: fraction of stored preference labels equal to the noise-free oracle
  label, over pairs whose oracle label is not a tie (0.5). None when there is no such pair.
- ``safety_agreement``: fraction of stored safety labels equal to the noise-free label, averaged
  over thresholds; ``safety_agreement_per_threshold`` gives each threshold's value.
- ``tie_rate`` (oracle ties among kept pairs), ``label_tie_rate`` (stored labels equal to 0.5),
  ``skip_rate`` (pairs the teacher skipped, over pairs asked for).
- ``safe_fraction`` / ``oracle_safe_fraction``: per threshold, share of safety labels that say safe.
- ``segments_per_episode``: mean/min/max segments per episode, and the share of episodes used.
- ``return_gap``: the distribution of |R(a) − R(b)| over kept pairs (mean, std, quantiles, a
  10-bin histogram).

Without an oracle (a stripped store) the agreement fields are None.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def preference_agreement(label: np.ndarray, oracle: np.ndarray) -> float | None:
    """Share of labels equal to the oracle label, oracle ties (0.5) excluded.

    Example:
        >>> preference_agreement(np.array([1, 0, 1, 0.5]), np.array([1, 1, 0.5, 0]))
        0.3333333333333333
    """
    label = np.asarray(label, dtype=np.float64)
    oracle = np.asarray(oracle, dtype=np.float64)
    mask = oracle != 0.5
    if not mask.any():
        return None
    return float(np.mean(label[mask] == oracle[mask]))


def safety_agreement(label: np.ndarray,
                     oracle: np.ndarray) -> tuple[float, list[float]] | tuple[None, list[None]]:
    """Mean over thresholds of the share of safety labels equal to the oracle, and each threshold's.

    Without safety rows both are None: ``(None, [None] * K)``.

    Example:
        >>> safety_agreement(np.array([[1, 0], [1, 1]]), np.array([[1, 0], [0, 1]]))
        (0.75, [0.5, 1.0])
    """
    label = np.asarray(label)
    oracle = np.asarray(oracle)
    if label.ndim != 2 or label.shape[0] == 0:
        k = label.shape[1] if label.ndim == 2 else 0
        return None, [None] * k
    per = [float(x) for x in np.mean(label == oracle, axis=0)]
    return float(np.mean(per)), per


def _distribution(x: np.ndarray) -> dict[str, Any]:
    if x.size == 0:
        return {"n": 0}
    counts, edges = np.histogram(x, bins=10)
    return {
        "n": int(x.size), "mean": float(x.mean()), "std": float(x.std()),
        "quantiles": {f"q{int(q * 100):02d}": float(v)
                      for q, v in zip(_QUANTILES, np.quantile(x, _QUANTILES), strict=True)},
        "histogram": {"counts": counts.tolist(), "edges": [float(e) for e in edges]},
    }


def compute_quality(*, pref_a: np.ndarray, pref_b: np.ndarray, pref_label: np.ndarray,
                    safety_label: np.ndarray, thresholds: np.ndarray, segment_episode: np.ndarray,
                    n_episodes: int, n_pairs_requested: int | None = None,
                    oracle_pref_label: np.ndarray | None = None,
                    oracle_safety_label: np.ndarray | None = None,
                    segment_return: np.ndarray | None = None) -> dict[str, Any]:
    """The label-quality summary of one store (see the module docstring for the fields).

    Args:
        pref_a, pref_b: (P,) segment ids of each kept pair.
        pref_label: (P,) stored labels y = P(b ≻ a).
        safety_label: (M, K) stored safety labels (1 safe).
        thresholds: (K,) cost thresholds.
        segment_episode: (S,) episode of each segment.
        n_episodes: E.
        n_pairs_requested: pairs asked of the teacher before skipping (default: P).
        oracle_pref_label, oracle_safety_label, segment_return: ground truth, if available.
    """
    pref_label = np.asarray(pref_label, dtype=np.float64)
    safety_label = np.asarray(safety_label)
    kappas = [float(t) for t in np.asarray(thresholds).reshape(-1)]
    n_pairs = int(pref_label.shape[0])
    requested = int(n_pairs_requested if n_pairs_requested is not None else n_pairs)
    q: dict[str, Any] = {
        "n_pairs": n_pairs, "n_pairs_requested": requested,
        "n_safety": int(safety_label.shape[0]), "n_segments": int(np.asarray(segment_episode).shape[0]),
        "skip_rate": float(1.0 - n_pairs / requested) if requested else 0.0,
        "label_tie_rate": float(np.mean(pref_label == 0.5)) if n_pairs else 0.0,
        "thresholds": kappas,
        "safe_fraction": [float(x) for x in np.mean(safety_label == 1, axis=0)] if safety_label.size else
        [None] * len(kappas),
    }
    if oracle_pref_label is not None:
        oracle_pref_label = np.asarray(oracle_pref_label, dtype=np.float64)
        q["preference_agreement"] = preference_agreement(pref_label, oracle_pref_label)
        q["tie_rate"] = float(np.mean(oracle_pref_label == 0.5)) if n_pairs else 0.0
    else:
        q["preference_agreement"] = None
        q["tie_rate"] = None
    if oracle_safety_label is not None:
        mean, per = safety_agreement(safety_label, oracle_safety_label)
        q["safety_agreement"] = mean
        q["safety_agreement_per_threshold"] = per
        q["oracle_safe_fraction"] = ([float(x) for x in np.mean(np.asarray(oracle_safety_label) == 1, axis=0)]
                                     if safety_label.size else [None] * len(kappas))
    else:
        q["safety_agreement"] = None
        q["safety_agreement_per_threshold"] = [None] * len(kappas)
        q["oracle_safe_fraction"] = [None] * len(kappas)
    counts = np.bincount(np.asarray(segment_episode, dtype=np.int64), minlength=int(n_episodes))
    q["segments_per_episode"] = {
        "mean": float(counts.mean()) if counts.size else 0.0,
        "min": int(counts.min()) if counts.size else 0,
        "max": int(counts.max()) if counts.size else 0,
        "episodes_used": float(np.mean(counts > 0)) if counts.size else 0.0,
    }
    if segment_return is not None and n_pairs:
        ret = np.asarray(segment_return, dtype=np.float64)
        gap = np.abs(ret[np.asarray(pref_a)] - ret[np.asarray(pref_b)])
        q["return_gap"] = _distribution(gap)
    else:
        q["return_gap"] = None
    return q


def quality_of(data: Any) -> dict[str, Any]:
    """:func:`compute_quality` of a :class:`feedbackgen.store.FeedbackData` (arrays in memory)."""
    o = data.oracle
    meta = data.metadata.get("preferences", {}) if isinstance(data.metadata, dict) else {}
    return compute_quality(
        pref_a=np.asarray(data.pref_a), pref_b=np.asarray(data.pref_b),
        pref_label=np.asarray(data.pref_label),
        safety_label=np.asarray(data.safety_label), thresholds=np.asarray(data.thresholds),
        segment_episode=np.asarray(data.segment_episode), n_episodes=int(data.episode_start.shape[0]),
        n_pairs_requested=meta.get("n_requested"),
        oracle_pref_label=None if o is None else np.asarray(o.pref_label),
        oracle_safety_label=None if o is None else np.asarray(o.safety_label),
        segment_return=None if o is None else np.asarray(o.segment_return),
    )
