"""Scripted preference teachers (feedbackgen.teachers): one shared contract plus per-teacher checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.teachers import PreferenceLabels, TeacherSpec, label_pairs, segment_returns

# every teacher configuration the shared contract runs over
TEACHERS = {
    "oracle": TeacherSpec(),
    "bt": TeacherSpec(beta=1.0),
    "myopic": TeacherSpec(gamma=0.9),
    "myopic-gamma1": TeacherSpec(gamma=1.0),
    "skip": TeacherSpec(skip_margin=4.0),
    "equal": TeacherSpec(equal_margin=1.5),
    "mistake": TeacherSpec(mistake=0.2),
    "myopic+equal+mistake": TeacherSpec.parse("myopic:gamma=0.8+equal:margin=1+mistake:eps=0.1"),
    "bt+skip+mistake": TeacherSpec.parse("bt:beta=0.5+skip:margin=3+mistake:eps=0.3"),
}
NOISE_FREE = ("oracle", "myopic-gamma1")


def _windows(seed: int = 0, pairs: int = 3000, steps: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Small integer rewards, so exact ties and near-ties are common."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, size=(pairs, steps)).astype(np.float32)
    b = rng.integers(0, 3, size=(pairs, steps)).astype(np.float32)
    return a, b


def _label(spec: TeacherSpec, a, b, seed: int = 0) -> PreferenceLabels:
    return label_pairs(a, b, spec, np.random.default_rng(seed))


def _is_deterministic(spec: TeacherSpec) -> bool:
    """Swapping a and b with the same seed gives exactly 1 − y (mistake flips do not depend on order)."""
    return spec.beta is None


# --------------------------------------------------------------------------- shared contract


@pytest.mark.parametrize("spec", TEACHERS.values(), ids=TEACHERS.keys())
class TestTeacherContract:
    def test_deterministic_for_a_seed(self, spec: TeacherSpec) -> None:
        a, b = _windows()
        first, second = _label(spec, a, b, seed=5), _label(spec, a, b, seed=5)
        for name in ("label", "prob", "keep", "oracle"):
            np.testing.assert_array_equal(getattr(first, name), getattr(second, name))

    def test_output_types_and_values(self, spec: TeacherSpec) -> None:
        a, b = _windows()
        out = _label(spec, a, b)
        assert out.label.dtype == np.float32 and out.prob.dtype == np.float32
        assert out.oracle.dtype == np.float32 and out.keep.dtype == np.bool_
        assert out.label.shape == out.prob.shape == out.keep.shape == out.oracle.shape == (a.shape[0],)
        assert set(np.unique(out.label).tolist()) <= {0.0, 0.5, 1.0}
        assert set(np.unique(out.oracle).tolist()) == {0.0, 0.5, 1.0}  # the data has ties
        if spec.beta is None:
            assert np.isnan(out.prob).all()
        else:
            assert ((out.prob >= 0) & (out.prob <= 1)).all()
        if spec.skip_margin is None:
            assert out.keep.all()

    def test_a_b_symmetry(self, spec: TeacherSpec) -> None:
        a, b = _windows()
        ab, ba = _label(spec, a, b, seed=9), _label(spec, b, a, seed=9)
        np.testing.assert_array_equal(ab.oracle + ba.oracle, 1.0)
        np.testing.assert_array_equal(ab.keep, ba.keep)
        if _is_deterministic(spec):
            np.testing.assert_array_equal(ab.label + ba.label, 1.0)
        else:
            np.testing.assert_allclose(ab.prob + ba.prob, 1.0, atol=1e-6)
            # in distribution: many draws of a few pairs, per-pair means must mirror each other
            reps = 20_000
            few_a, few_b = np.repeat(a[:4], reps, axis=0), np.repeat(b[:4], reps, axis=0)
            mean_ab = _label(spec, few_a, few_b, seed=1).label.reshape(4, reps).mean(axis=1)
            mean_ba = _label(spec, few_b, few_a, seed=2).label.reshape(4, reps).mean(axis=1)
            sigma = np.sqrt(2 * 0.25 / reps)  # worst-case std of the difference of two means
            assert np.all(np.abs(mean_ab - (1.0 - mean_ba)) < 5 * sigma)

    def test_oracle_label_is_the_undiscounted_comparison(self, spec: TeacherSpec) -> None:
        a, b = _windows()
        out = _label(spec, a, b)
        ra, rb = a.sum(axis=1, dtype=np.float64), b.sum(axis=1, dtype=np.float64)
        expected = np.where(rb > ra, 1.0, np.where(rb < ra, 0.0, 0.5))
        np.testing.assert_array_equal(out.oracle, expected)


@pytest.mark.parametrize("name", NOISE_FREE)
def test_noise_free_teachers_agree_with_the_oracle(name: str) -> None:
    a, b = _windows(seed=11)
    out = _label(TEACHERS[name], a, b)
    assert np.mean(out.label == out.oracle) == 1.0


def test_myopic_gamma_one_agrees_bit_for_bit_on_real_valued_rewards() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5000, 50)), rng.normal(size=(5000, 50))
    b[:100] = a[:100]  # exact ties too
    out = _label(TeacherSpec.parse("myopic:gamma=1"), a, b)
    np.testing.assert_array_equal(out.label, out.oracle)


# --------------------------------------------------------------------------- hand-computed examples


def test_oracle_hand_computed() -> None:
    a = np.array([[1.0, 2.0], [3.0, 0.0], [1.0, 1.0]])
    b = np.array([[2.0, 2.0], [1.0, 1.0], [2.0, 0.0]])
    out = _label(TeacherSpec(), a, b)
    assert out.label.tolist() == [1.0, 0.0, 0.5]
    assert out.oracle.tolist() == [1.0, 0.0, 0.5]


def test_myopic_weights_recent_steps_more() -> None:
    # undiscounted: R(a) = 10 > R(b) = 9; with γ = 0.5: R(a) = 0.5·10 = 5 < R(b) = 9
    a, b = np.array([[10.0, 0.0]]), np.array([[0.0, 9.0]])
    out = _label(TeacherSpec(gamma=0.5), a, b)
    assert out.label.tolist() == [1.0] and out.oracle.tolist() == [0.0]
    np.testing.assert_allclose(segment_returns(np.array([[1.0, 2.0, 4.0]]), 0.5), [0.25 + 1.0 + 4.0])


def test_bt_probability_hand_computed() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0], [3.0, 0.0]])
    b = np.array([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    out = _label(TeacherSpec(beta=2.0), a, b)
    expected = [1 / (1 + math.exp(-2.0)), 0.5, 1 / (1 + math.exp(6.0))]
    np.testing.assert_allclose(out.prob, expected, rtol=1e-6)
    assert set(out.label.tolist()) <= {0.0, 1.0}


def test_bt_with_myopia_uses_the_discounted_returns() -> None:
    a, b = np.array([[4.0, 0.0]]), np.array([[0.0, 3.0]])
    out = _label(TeacherSpec(beta=1.0, gamma=0.5), a, b)  # R(a) = 2, R(b) = 3
    np.testing.assert_allclose(out.prob, [1 / (1 + math.exp(-1.0))], rtol=1e-6)


def test_bt_labels_are_calibrated() -> None:
    rng = np.random.default_rng(3)
    n = 200_000
    a, b = rng.normal(size=(n, 1)), rng.normal(size=(n, 1))
    out = _label(TeacherSpec(beta=1.5), a, b, seed=4)
    p = out.prob.astype(np.float64)
    sigma = np.sqrt(np.sum(p * (1 - p))) / n
    assert abs(out.label.mean() - p.mean()) < 5 * sigma


def test_skip_drops_pairs_where_both_returns_are_below_the_margin() -> None:
    a = np.array([[1.0, 1.0], [1.0, 1.0], [5.0, 0.0], [2.5, 2.5]])
    b = np.array([[2.0, 2.0], [3.0, 3.0], [1.0, 0.0], [0.0, 0.0]])
    out = _label(TeacherSpec(skip_margin=5.0), a, b)  # returns a: 2, 2, 5, 5; b: 4, 6, 1, 0
    assert out.keep.tolist() == [False, True, True, True]
    assert out.label.tolist() == [1.0, 1.0, 0.0, 0.0]  # skipped pairs are still labelled


def test_equal_margin_is_strict_and_on_undiscounted_returns() -> None:
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.5, 0.0], [2.0, 0.0], [0.0, 0.2], [0.9, 0.0]])
    out = _label(TeacherSpec(equal_margin=1.0), a, b)  # |ΔR| = 0.5, 1.0 (not < 1), 0.8, 0.1
    assert out.label.tolist() == [0.5, 1.0, 0.5, 0.5]
    # myopic returns 0.1 vs 0 would be "equal" at margin 0.5; the undiscounted 10 vs 0 are not
    out = _label(TeacherSpec(gamma=0.01, equal_margin=0.5), np.array([[10.0, 0.0]]), np.array([[0.0, 0.0]]))
    assert out.label.tolist() == [0.0]


def test_mistake_never_changes_equal_labels() -> None:
    a, b = np.array([[1.0]] * 1000), np.array([[1.05]] * 1000)
    out = _label(TeacherSpec(equal_margin=0.1, mistake=0.5), a, b)
    assert (out.label == 0.5).all()


# --------------------------------------------------------------------------- noise calibration


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.1, 0.3, 1.0])
def test_mistake_rate_matches_eps(eps: float) -> None:
    n = 200_000
    rng = np.random.default_rng(21)
    a, b = rng.normal(size=(n, 1)), rng.normal(size=(n, 1))  # no ties
    out = _label(TeacherSpec(mistake=eps), a, b, seed=22)
    rate = np.mean(out.label != out.oracle)
    sigma = math.sqrt(eps * (1 - eps) / n)
    assert abs(rate - eps) <= 5 * sigma
    wrong = out.label != out.oracle
    np.testing.assert_array_equal(out.label[wrong], 1.0 - out.oracle[wrong])


def test_same_seed_gives_the_same_mistakes_across_teachers() -> None:
    a, b = _windows(seed=2)
    hard = _label(TeacherSpec(mistake=0.3), a, b, seed=8)
    myopic = _label(TeacherSpec(gamma=0.9, mistake=0.3), a, b, seed=8)
    free_hard = _label(TeacherSpec(), a, b, seed=8)
    free_myopic = _label(TeacherSpec(gamma=0.9), a, b, seed=8)
    flipped_hard = (hard.label != free_hard.label)
    flipped_myopic = (myopic.label != free_myopic.label)
    decided = (free_hard.label != 0.5) & (free_myopic.label != 0.5)
    np.testing.assert_array_equal(flipped_hard[decided], flipped_myopic[decided])


# --------------------------------------------------------------------------- spec parsing / validation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oracle", TeacherSpec()),
        ("bt:beta=1", TeacherSpec(beta=1.0)),
        ("bt", TeacherSpec(beta=1.0)),
        ("bt:2.5", TeacherSpec(beta=2.5)),
        ("myopic:gamma=0.9+mistake:eps=0.1", TeacherSpec(gamma=0.9, mistake=0.1)),
        ("skip:margin=5+equal:margin=0.1", TeacherSpec(skip_margin=5.0, equal_margin=0.1)),
        (" Oracle + mistake : eps = 0.2 ", TeacherSpec(mistake=0.2)),
        ("bt:beta=0.5+myopic:gamma=0.7+skip:margin=-1+equal:margin=0+mistake:eps=0",
         TeacherSpec(beta=0.5, gamma=0.7, skip_margin=-1.0, equal_margin=0.0)),
    ],
)
def test_parse(text: str, expected: TeacherSpec) -> None:
    assert TeacherSpec.parse(text) == expected


def test_parse_global_noise_is_the_default_mistake() -> None:
    assert TeacherSpec.parse("oracle", mistake=0.2).mistake == 0.2
    assert TeacherSpec.parse("oracle+mistake:eps=0.05", mistake=0.2).mistake == 0.05


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("oracel", "unknown teacher component"),
        ("bt:beta=1+bt:beta=2", "twice"),
        ("bt:beta=abc", "not a number"),
        ("bt:gamma=0.9", "no parameter"),
        ("oracle:beta=1", "takes no parameters"),
        ("oracle+bt:beta=1", "choose one"),
        ("skip", "needs a value"),
        ("mistake:eps=1.5", r"\[0, 1\]"),
        ("bt:beta=0", "> 0"),
        ("myopic:gamma=0", r"\(0, 1\]"),
        ("equal:margin=-1", ">= 0"),
    ],
)
def test_parse_errors(text: str, match: str) -> None:
    with pytest.raises(FeedbackgenError, match=match):
        TeacherSpec.parse(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"beta": 0.0}, {"beta": -1.0}, {"beta": float("inf")}, {"gamma": 0.0}, {"gamma": 1.1},
        {"mistake": -0.1}, {"mistake": 1.1}, {"mistake": float("nan")}, {"equal_margin": -0.5},
        {"skip_margin": float("nan")}, {"beta": True},
    ],
)
def test_spec_validation(kwargs: dict) -> None:
    with pytest.raises(FeedbackgenError):
        TeacherSpec(**kwargs)


@pytest.mark.parametrize("spec", TEACHERS.values(), ids=TEACHERS.keys())
def test_spec_dict_round_trip(spec: TeacherSpec) -> None:
    assert TeacherSpec.from_dict(spec.to_dict()) == spec


def test_spec_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(FeedbackgenError, match="unknown keys"):
        TeacherSpec.from_dict({"beta": 1.0, "temperature": 2.0})


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (np.zeros((3, 4)), np.zeros((3, 5))),
        (np.zeros(4), np.zeros(4)),
        (np.zeros((3, 0)), np.zeros((3, 0))),
        (np.full((2, 2), np.nan), np.zeros((2, 2))),
    ],
)
def test_label_pairs_rejects_bad_windows(a, b) -> None:
    with pytest.raises(FeedbackgenError):
        _label(TeacherSpec(), a, b)
