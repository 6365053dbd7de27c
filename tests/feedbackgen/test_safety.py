"""Safety labels (feedbackgen.safety): rules, monotonicity, noise calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.safety import SAFETY_RULES, SafetySpec, label_safety, segment_thresholds

THRESHOLDS = [0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0]  # ascending


def _label(costs, thresholds, spec: SafetySpec, *, t_max: int = 100, seed: int = 0):
    return label_safety(np.asarray(costs, dtype=np.float64), thresholds, spec,
                        max_episode_steps=t_max, rng=np.random.default_rng(seed))


def _random_costs(seed: int = 0, segments: int = 2000, steps: int = 10) -> np.ndarray:
    """DSRL-like 0/1 step costs with a spread of segment cost sums."""
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0.0, 1.0, size=(segments, 1))
    return (rng.random((segments, steps)) < rate).astype(np.float32)


# --------------------------------------------------------------------------- rules, hand-computed


def test_segment_thresholds_hand_computed() -> None:
    np.testing.assert_allclose(segment_thresholds([10, 20, 40], 50, 1000, "scaled"), [0.5, 1.0, 2.0])
    np.testing.assert_array_equal(segment_thresholds([10, 20, 40], 50, 1000, "episode"), [10, 20, 40])
    np.testing.assert_array_equal(segment_thresholds([10, 20, 40], 50, 1000, "zero"), [0, 0, 0])


def test_scaled_rule_hand_computed() -> None:
    # T_max = 100, H = 10, κ = 10, 20 → κ_seg = 1, 2; segment costs 0, 1, 1.5, 2, 3
    costs = np.zeros((5, 10))
    costs[1, 0] = 1.0
    costs[2, :3] = 0.5
    costs[3, [2, 7]] = 1.0
    costs[4, :3] = 1.0
    noisy, oracle = _label(costs, [10.0, 20.0], SafetySpec(rule="scaled", noise="none"), t_max=100)
    assert oracle.tolist() == [[1, 1], [1, 1], [0, 1], [0, 1], [0, 0]]
    np.testing.assert_array_equal(noisy, oracle)


def test_episode_rule_hand_computed() -> None:
    costs = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    _, oracle = _label(costs, [0.0, 1.0, 2.0], SafetySpec(rule="episode", noise="none"), t_max=1000)
    assert oracle.tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_zero_rule_looks_at_steps_not_the_sum() -> None:
    costs = np.array([[0.0, 0.0], [0.0, 0.3], [1.0, -1.0], [-0.5, 0.0]])
    _, zero = _label(costs, [10.0, 20.0], SafetySpec(rule="zero", noise="none"))
    assert zero.tolist() == [[1, 1], [0, 0], [0, 0], [1, 1]]
    # the sum of the third segment is 0, so the episode rule calls it safe
    _, episode = _label(costs, [0.0], SafetySpec(rule="episode", noise="none"))
    assert episode[:, 0].tolist() == [1, 0, 1, 1]


def test_outputs_are_int8_one_column_per_threshold() -> None:
    noisy, oracle = _label(_random_costs(), [10.0, 20.0, 40.0], SafetySpec(eps=0.1))
    assert noisy.dtype == np.int8 and oracle.dtype == np.int8
    assert noisy.shape == oracle.shape == (2000, 3)
    assert set(np.unique(noisy).tolist()) <= {0, 1}


# --------------------------------------------------------------------------- monotonicity, determinism

NOISES = {
    "none": SafetySpec(noise="none"),
    "flip": SafetySpec(noise="flip", eps=0.2),
    "asymmetric": SafetySpec(noise="asymmetric", false_safe=0.3, false_unsafe=0.1),
    "logistic": SafetySpec(noise="logistic", tau=0.5),
}


@pytest.mark.parametrize("rule", SAFETY_RULES)
def test_oracle_labels_are_monotone_in_the_threshold(rule: str) -> None:
    costs = _random_costs(seed=1)
    costs[:50] *= -1  # negative steps too: the zero rule must not rely on sums
    _, oracle = _label(costs, THRESHOLDS, SafetySpec(rule=rule, noise="none"), t_max=40)
    assert (np.diff(oracle.astype(int), axis=1) >= 0).all()  # safe at κ1 ⇒ safe at κ2 > κ1
    assert oracle.min() == 0 and oracle.max() == 1


@pytest.mark.parametrize("rule", ["scaled", "episode"])
@pytest.mark.parametrize("spec", NOISES.values(), ids=NOISES.keys())
def test_noisy_labels_stay_monotone_with_a_shared_uniform(rule: str, spec: SafetySpec) -> None:
    spec = SafetySpec.from_dict({**spec.to_dict(), "rule": rule})
    noisy, _ = _label(_random_costs(seed=2), THRESHOLDS, spec, t_max=40, seed=3)
    assert (np.diff(noisy.astype(int), axis=1) >= 0).all()


@pytest.mark.parametrize("spec", NOISES.values(), ids=NOISES.keys())
def test_deterministic_for_a_seed(spec: SafetySpec) -> None:
    costs = _random_costs(seed=4)
    first, second = _label(costs, THRESHOLDS, spec, seed=6), _label(costs, THRESHOLDS, spec, seed=6)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    if spec.noise != "none":
        assert not np.array_equal(first[0], _label(costs, THRESHOLDS, spec, seed=7)[0])


@pytest.mark.parametrize("spec", NOISES.values(), ids=NOISES.keys())
def test_a_thresholds_labels_do_not_depend_on_the_other_thresholds(spec: SafetySpec) -> None:
    costs = _random_costs(seed=5)
    all_k, _ = _label(costs, [10.0, 20.0, 40.0], spec, seed=1)
    one_k, _ = _label(costs, [20.0], spec, seed=1)
    np.testing.assert_array_equal(all_k[:, [1]], one_k)


def test_no_noise_means_noisy_equals_oracle() -> None:
    for spec in (SafetySpec(noise="none", eps=0.5), SafetySpec(noise="flip", eps=0.0),
                 SafetySpec(noise="asymmetric")):
        noisy, oracle = _label(_random_costs(), THRESHOLDS, spec)
        np.testing.assert_array_equal(noisy, oracle)


# --------------------------------------------------------------------------- noise calibration

N_CAL = 200_000


def _balanced_costs(seed: int) -> np.ndarray:
    """(N, 1) segment costs 0..3: with the episode rule and κ = 1.5, half safe, half unsafe."""
    return np.random.default_rng(seed).integers(0, 4, size=(N_CAL, 1)).astype(np.float64)


def _assert_rate(flipped: np.ndarray, rate: float) -> None:
    n = flipped.size
    sigma = math.sqrt(rate * (1 - rate) / n)
    assert abs(flipped.mean() - rate) <= 5 * sigma, (flipped.mean(), rate)


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.2, 0.5])
def test_flip_rate_matches_eps(eps: float) -> None:
    noisy, oracle = _label(_balanced_costs(1), [1.5, 2.5], SafetySpec(rule="episode", eps=eps), seed=2)
    for k in range(2):
        _assert_rate(noisy[:, k] != oracle[:, k], eps)
        # symmetric: the same rate among safe and among unsafe segments
        _assert_rate(noisy[oracle[:, k] == 1, k] == 0, eps)
        _assert_rate(noisy[oracle[:, k] == 0, k] == 1, eps)


@pytest.mark.parametrize(("false_safe", "false_unsafe"), [(0.1, 0.0), (0.0, 0.15), (0.3, 0.05), (0.7, 0.6)])
def test_asymmetric_rates_match_separately(false_safe: float, false_unsafe: float) -> None:
    spec = SafetySpec(rule="episode", noise="asymmetric", false_safe=false_safe, false_unsafe=false_unsafe)
    noisy, oracle = _label(_balanced_costs(3), [1.5], spec, seed=4)
    unsafe, safe = oracle[:, 0] == 0, oracle[:, 0] == 1
    _assert_rate(noisy[unsafe, 0] == 1, false_safe)
    _assert_rate(noisy[safe, 0] == 0, false_unsafe)


@pytest.mark.parametrize("tau", [0.3, 1.0, 3.0])
def test_logistic_matches_the_analytic_mean(tau: float) -> None:
    costs = np.random.default_rng(5).uniform(0.0, 4.0, size=(N_CAL, 4))  # segment cost 0..16
    thresholds = [10.0, 20.0, 40.0]
    t_max, length = 100, 4
    noisy, _ = _label(costs, thresholds, SafetySpec(noise="logistic", tau=tau), t_max=t_max, seed=6)
    total = costs.sum(axis=1)
    for k, kappa in enumerate(thresholds):
        kappa_seg = kappa * length / t_max
        p_unsafe = 1.0 / (1.0 + np.exp(-(total - kappa_seg) / tau))
        sigma = math.sqrt(np.sum(p_unsafe * (1 - p_unsafe))) / N_CAL
        assert abs(np.mean(noisy[:, k] == 0) - p_unsafe.mean()) <= 5 * sigma


def test_logistic_hand_computed_extremes() -> None:
    # far below κ_seg: always safe; far above: always unsafe (τ small)
    costs = np.array([[0.0], [100.0]])
    noisy, oracle = _label(costs, [10.0], SafetySpec(rule="episode", noise="logistic", tau=0.1))
    assert noisy.tolist() == [[1], [0]] and oracle.tolist() == [[1], [0]]


# --------------------------------------------------------------------------- spec validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rule": "sum"}, "unknown safety rule"),
        ({"noise": "gaussian"}, "unknown safety noise"),
        ({"eps": 1.5}, "eps"),
        ({"eps": -0.1}, "eps"),
        ({"false_safe": 2.0}, "false_safe"),
        ({"false_unsafe": float("nan")}, "false_unsafe"),
        ({"tau": 0.0}, "tau"),
        ({"tau": -1.0}, "tau"),
        ({"rule": "zero", "noise": "logistic"}, "logistic"),
    ],
)
def test_spec_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(FeedbackgenError, match=match):
        SafetySpec(**kwargs)


@pytest.mark.parametrize("spec", NOISES.values(), ids=NOISES.keys())
def test_spec_dict_round_trip(spec: SafetySpec) -> None:
    d = spec.to_dict()
    assert set(d) == {"rule", "noise", "eps", "false_safe", "false_unsafe", "tau"}
    assert SafetySpec.from_dict(d) == spec


def test_spec_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(FeedbackgenError, match="unknown keys"):
        SafetySpec.from_dict({"rule": "scaled", "kappa": 3})


@pytest.mark.parametrize(
    ("costs", "thresholds", "match"),
    [
        (np.zeros(5), [10.0], "segments, steps"),
        (np.zeros((5, 0)), [10.0], "segments, steps"),
        (np.full((2, 2), np.inf), [10.0], "NaN or infinite"),
        (np.zeros((5, 2)), [], "non-empty"),
        (np.zeros((5, 2)), [-1.0], ">= 0"),
        (np.zeros((5, 2)), ["ten"], "numbers"),
    ],
)
def test_label_safety_rejects_bad_input(costs, thresholds, match: str) -> None:
    with pytest.raises(FeedbackgenError, match=match):
        _label(costs, thresholds, SafetySpec())


def test_segment_thresholds_rejects_bad_input() -> None:
    with pytest.raises(FeedbackgenError, match="unknown safety rule"):
        segment_thresholds([10.0], 5, 100, "mean")
    with pytest.raises(FeedbackgenError, match="max episode steps"):
        segment_thresholds([10.0], 5, 0, "scaled")
    with pytest.raises(FeedbackgenError, match="segment length"):
        segment_thresholds([10.0], 0, 100, "scaled")
