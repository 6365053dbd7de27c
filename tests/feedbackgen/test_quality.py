"""Label-quality summary against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from feedbackgen.quality import compute_quality, preference_agreement, safety_agreement


def test_preference_agreement_excludes_oracle_ties() -> None:
    label = np.array([1.0, 0.0, 0.5, 1.0, 0.5])
    oracle = np.array([1.0, 1.0, 0.5, 0.5, 0.0])
    # pairs 0, 1, 4 are not ties; only pair 0 agrees
    assert preference_agreement(label, oracle) == pytest.approx(1 / 3)
    assert preference_agreement(np.array([0.5]), np.array([0.5])) is None


def test_safety_agreement_mean_and_per_threshold() -> None:
    label = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]], np.int8)
    oracle = np.array([[1, 1, 1], [0, 0, 1], [0, 0, 1], [1, 1, 1]], np.int8)
    mean, per = safety_agreement(label, oracle)
    assert per == [0.75, 0.5, 0.75]
    assert mean == pytest.approx(2 / 3)


def test_compute_quality_fields() -> None:
    q = compute_quality(
        pref_a=np.array([0, 1, 2]), pref_b=np.array([3, 4, 5]), pref_label=np.array([1.0, 0.0, 0.5]),
        safety_label=np.array([[1, 1], [0, 1], [0, 0], [1, 1]], np.int8), thresholds=np.array([10.0, 20.0]),
        segment_episode=np.array([0, 0, 1, 1, 1, 3]), n_episodes=4, n_pairs_requested=4,
        oracle_pref_label=np.array([1.0, 1.0, 0.5]),
        oracle_safety_label=np.array([[1, 1], [0, 0], [0, 0], [1, 1]], np.int8),
        segment_return=np.array([0.0, 1.0, 2.0, 4.0, 0.0, 2.0]),
    )
    assert q["preference_agreement"] == 0.5 and q["tie_rate"] == pytest.approx(1 / 3)
    assert q["label_tie_rate"] == pytest.approx(1 / 3) and q["skip_rate"] == 0.25
    assert q["safe_fraction"] == [0.5, 0.75] and q["oracle_safe_fraction"] == [0.5, 0.5]
    assert q["safety_agreement_per_threshold"] == [1.0, 0.75] and q["safety_agreement"] == 0.875
    assert q["segments_per_episode"] == {"mean": 1.5, "min": 0, "max": 3, "episodes_used": 0.75}
    gap = q["return_gap"]
    assert gap["n"] == 3 and gap["mean"] == pytest.approx(5 / 3)  # |0-4|, |1-0|, |2-2|
    assert gap["quantiles"]["q00"] == 0.0 and gap["quantiles"]["q100"] == 4.0
    assert sum(gap["histogram"]["counts"]) == 3


def test_without_oracle_agreement_is_none() -> None:
    q = compute_quality(pref_a=np.array([0]), pref_b=np.array([1]), pref_label=np.array([1.0]),
                        safety_label=np.array([[1]], np.int8), thresholds=np.array([5.0]),
                        segment_episode=np.array([0, 0]), n_episodes=1)
    assert q["preference_agreement"] is None and q["safety_agreement"] is None and q["return_gap"] is None
