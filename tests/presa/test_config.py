"""TrainConfig: validation, per-suite defaults, presets, precedence, --set parsing."""

from __future__ import annotations

import dataclasses

import pytest

from feedbackgen.errors import FeedbackgenError
from presa.algos import get_algorithm, warmup_lr
from presa.config import TrainConfig, load_config_file, parse_set, resolve_config


def test_defaults_are_the_method_defaults() -> None:
    c = TrainConfig()
    # docs/method.md, "Choosing the defaults": class-balanced η, a saturating safe side, δ from the
    # store's attainable ceiling, scores against π_ref itself, a PID dual
    assert (c.alpha, c.gamma, c.eta, c.lambda_cb, c.beta_s, c.beta_safe) == (0.2, 0.99, 1.0, 1.0, 1.0, 5.0)
    assert (c.delta, c.delta_fraction, c.delta_margin) == (None, 0.5, 0.02)
    assert (c.nu_init, c.nu_lr, c.nu_max, c.zref_mode, c.zref_momentum) == (1.0, 1e-2, 100.0, "zero", 0.9)
    assert (c.nu_rule, c.pid_kp, c.pid_kd) == ("pid", 10.0, 0.0)
    assert (c.pair_batch, c.safety_batch, c.hidden, c.dropout) == (96, 96, (256, 256), 0.25)
    assert (c.lr, c.align_lr, c.warmup_steps, c.precision, c.device) == (1e-4, 1e-5, 10_000, "auto", "cpu")
    assert c.safety_draw == "pairs"


@pytest.mark.parametrize(
    "suite,want",
    [
        ("bullet", {"alpha": 0.2, "gamma": 0.99, "eta": 1.0, "total_steps": 100_000, "bc_steps": 30_000}),
        (
            "safety_gymnasium",
            {"alpha": 0.1, "gamma": 0.99, "eta": 1.0, "total_steps": 100_000, "bc_steps": 30_000},
        ),
        ("metadrive", {"alpha": 0.2, "gamma": 1.0, "eta": 1.0, "total_steps": 200_000, "bc_steps": 60_000}),
    ],
)
def test_suite_defaults(suite: str, want: dict) -> None:
    c = resolve_config(suite=suite)
    assert {k: getattr(c, k) for k in want} == want


def test_quick_preset_is_short_and_keeps_the_suite_values() -> None:
    c = resolve_config(suite="safety_gymnasium", preset="quick")
    assert c.total_steps <= 5_000 and c.bc_steps < c.total_steps
    assert c.alpha == 0.1 and c.gamma == 0.99


def test_precedence_suite_preset_file_overrides(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("eta: 0.7\nbc_steps: 500\ndelta: 0.8\n")
    c = resolve_config(
        suite="safety_gymnasium", preset="quick", file_values=load_config_file(f), overrides={"delta": 0.95}
    )
    assert c.alpha == 0.1  # suite
    assert c.total_steps == 2_000  # preset
    assert c.eta == 0.7 and c.bc_steps == 500  # file beats suite and preset
    assert c.delta == 0.95  # explicit beats file


def test_frozen_and_roundtrip() -> None:
    c = TrainConfig(hidden=(64, 32), threshold=20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.alpha = 1.0  # type: ignore[misc]
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert c.replace(delta=0.95).delta == 0.95 and c.delta is None


@pytest.mark.parametrize("delta", [0.0, 1.0, 1.2, -0.1])
def test_delta_outside_open_unit_interval_is_one_clear_error(delta: float) -> None:
    with pytest.raises(FeedbackgenError, match=r"delta must be in \(0, 1\)") as e:
        TrainConfig(delta=delta)
    assert "\n" not in str(e.value)


def test_unknown_key_lists_close_names() -> None:
    with pytest.raises(FeedbackgenError, match="unknown config key 'deltta' \\(did you mean delta"):
        resolve_config(overrides={"deltta": 0.5})
    with pytest.raises(FeedbackgenError, match="unknown config key"):
        parse_set(["nu_lrr=0.1"])


def test_parse_set_types() -> None:
    vals = parse_set(["delta=0.95", "hidden=[64,64]", "zref_mode=kl", "seed=3", "bc_steps=1_000"])
    c = TrainConfig.from_dict(vals)
    assert (c.delta, c.hidden, c.zref_mode, c.seed, c.bc_steps) == (0.95, (64, 64), "kl", 3, 1000)
    assert TrainConfig.from_dict(parse_set(["hidden=128,64"])).hidden == (128, 64)
    assert TrainConfig.from_dict(parse_set(["threshold=none"])).threshold is None


@pytest.mark.parametrize(
    "item,match",
    [
        ("seed=abc", "seed' expects an integer"),
        ("alpha=0", "alpha must be > 0"),
        ("zref_mode=mean", "zref_mode"),
        ("nu_rule=adam", "nu_rule"),
        ("policy=beta", "policy must be one of"),
        ("dropout=1", "dropout"),
        ("bc_steps=5000", "bc_steps"),
        ("device=tpu", "device"),
        ("hidden=[]", "hidden"),
        ("lambda_cb=0", "lambda_cb"),
        ("gamma=1.5", "gamma"),
        ("nu_init=500", "nu_init"),
        ("bc_batch=1.5", "bc_batch"),
    ],
)
def test_bad_values_are_clear_errors(item: str, match: str) -> None:
    with pytest.raises(FeedbackgenError, match=match):
        resolve_config(preset="quick", overrides=parse_set([item]))


def test_set_without_equals_and_bad_file(tmp_path) -> None:
    with pytest.raises(FeedbackgenError, match="key=value"):
        parse_set(["delta"])
    with pytest.raises(FeedbackgenError, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(FeedbackgenError, match="mapping"):
        load_config_file(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("alphaa: 1\n")
    with pytest.raises(FeedbackgenError, match="did you mean alpha"):
        load_config_file(tmp_path / "typo.yaml")


def test_unknown_algorithm() -> None:
    with pytest.raises(FeedbackgenError, match="unknown algorithm 'presaa'.*did you mean presa"):
        get_algorithm("presaa")


def test_warmup_schedule() -> None:
    c = TrainConfig(bc_steps=10, total_steps=100, lr=1e-4, align_lr=1e-5, warmup_steps=4)
    assert [warmup_lr(s, c) for s in (0, 9)] == [1e-4, 1e-4]
    assert [round(warmup_lr(s, c), 12) for s in (10, 11, 12, 13, 14, 50)] == [
        2.5e-6,
        5e-6,
        7.5e-6,
        1e-5,
        1e-5,
        1e-5,
    ]
    assert warmup_lr(10, c.replace(warmup_steps=0)) == 1e-5
