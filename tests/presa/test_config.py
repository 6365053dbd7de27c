"""TrainConfig: validation, per-suite defaults, presets, precedence, --set parsing."""

from __future__ import annotations

import dataclasses

import pytest

from feedbackgen.errors import FeedbackgenError
from presa.algos import (
    ALGORITHMS,
    ReferenceAlignment,
    available_algorithms,
    get_algorithm,
    register,
    warmup_lr,
)
from presa.config import (
    KEYS,
    PRESET_VALUES,
    SHARED_KEYS,
    SUITE_DEFAULTS,
    AlignmentConfig,
    TrainConfig,
    check_config_class,
    config_class,
    dump_yaml,
    for_algorithm,
    load_config_file,
    parse_set,
    resolve_config,
    saved_config,
    valid_keys,
)


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


# ------------------------------------------------------------------------- per-algorithm configs


def test_a_key_the_algorithm_does_not_read_is_one_line_listing_the_valid_ones() -> None:
    with pytest.raises(FeedbackgenError) as e:
        resolve_config(preset="study", overrides={"algo": "bc_safe", "nu_lr": 0.1})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("unknown config key 'nu_lr' (only presa, two_stage read it) for algorithm bc_safe; "
                          "valid keys: ")
    assert msg.split("valid keys: ")[1].split(", ") == list(valid_keys("bc_safe"))
    # the same key is PreSa's (and the study preset's value is kept for it)
    assert resolve_config(preset="study", overrides={"nu_lr": 0.1}).nu_lr == 0.1
    assert resolve_config(preset="study").nu_lr == 0.3
    # a typo is named with the closest keys of the algorithm
    with pytest.raises(FeedbackgenError, match=r"'lrr' \(did you mean lr\?\) for algorithm bc_safe"):
        resolve_config(overrides={"algo": "bc_safe", "lrr": 0.1})


def test_library_calls_check_the_algorithms_keys_too() -> None:
    cfg = resolve_config(overrides={"algo": "bc_safe", "threshold": 10})
    with pytest.raises(FeedbackgenError, match="'delta' .* for algorithm bc_safe"):
        cfg.replace(delta=0.9)
    with pytest.raises(FeedbackgenError, match="'bc_steps' .* for algorithm bc_safe"):
        type(cfg).from_dict({"algo": "bc_safe", "bc_steps": 5})
    with pytest.raises(AttributeError):
        cfg.nu_lr  # noqa: B018 - the algorithm cannot read a key it does not declare
    assert cfg.replace(lr=3e-4).lr == 3e-4


def test_every_algorithm_has_its_own_config_class() -> None:
    for algo in available_algorithms():
        cls = config_class(algo)
        keys = valid_keys(algo)
        assert cls().algo == algo and cls.valid_keys() == keys
        assert set(SHARED_KEYS) <= set(keys) <= set(KEYS)
        # each key has the type, default and checks of TrainConfig
        for key in keys:
            if key != "algo":
                assert getattr(cls(), key) == getattr(TrainConfig(), key), (algo, key)
    assert config_class("presa") is TrainConfig and valid_keys("presa") == KEYS
    assert valid_keys("bc_all") == SHARED_KEYS
    with pytest.raises(FeedbackgenError, match="nu_init must be ≥ 0"):
        config_class("safety_only")(nu_init=-1.0)


def test_a_config_class_takes_each_key_from_train_config() -> None:
    @dataclasses.dataclass(frozen=True)
    class GoodConfig(AlignmentConfig):
        algo: str = "good"
        beta_safe: float | None = TrainConfig.beta_safe

    @dataclasses.dataclass(frozen=True)
    class OtherDefaultConfig(AlignmentConfig):
        algo: str = "other"
        eta: float = 2.0

    @dataclasses.dataclass(frozen=True)
    class OtherTypeConfig(AlignmentConfig):
        algo: str = "other"
        beta_safe: float = 5.0

    class NotADataclassConfig(AlignmentConfig):
        pass

    check_config_class("good", GoodConfig)
    with pytest.raises(ValueError, match="defaults algo to 'good'"):
        check_config_class("other", GoodConfig)
    with pytest.raises(ValueError, match=r"OtherDefaultConfig.eta .* `eta: float = TrainConfig.eta`"):
        check_config_class("other", OtherDefaultConfig)
    with pytest.raises(ValueError, match=r"`beta_safe: float \| None = TrainConfig.beta_safe`"):
        check_config_class("other", OtherTypeConfig)
    with pytest.raises(ValueError, match="decorated @dataclass"):
        check_config_class("good", NotADataclassConfig)

    class Untyped(ReferenceAlignment):  # no type parameter: no config class
        def align_update(self, step: int) -> dict:
            return {}

    with pytest.raises(ValueError, match="type parameter of its base"):
        register("untyped")(Untyped)
    assert "untyped" not in ALGORITHMS


@pytest.mark.parametrize("algo", available_algorithms())
@pytest.mark.parametrize("preset", ["full", "quick", "study"])
@pytest.mark.parametrize("suite", ["bullet", "metadrive"])
def test_suite_defaults_and_presets_set_only_the_keys_the_algorithm_reads(algo: str, preset: str,
                                                                         suite: str) -> None:
    cfg = resolve_config(suite=suite, preset=preset, overrides={"algo": algo})
    assert type(cfg) is config_class(algo) and set(cfg.to_dict()) == set(valid_keys(algo))
    want = {**SUITE_DEFAULTS[suite], **PRESET_VALUES[preset]}
    assert {k: getattr(cfg, k) for k in want if k in valid_keys(algo)} == \
        {k: v for k, v in want.items() if k in valid_keys(algo)}


def test_bc_baselines_are_not_bound_by_bc_steps() -> None:
    # the study preset's bc_steps (2,000) used to make total_steps=1000 an error for pure BC
    bc = resolve_config(preset="study", overrides={"algo": "bc_all", "total_steps": 1000})
    assert bc.total_steps == 1000
    with pytest.raises(FeedbackgenError, match="bc_steps ≤ total_steps"):
        resolve_config(preset="study", overrides={"algo": "cpl", "total_steps": 1000})


def test_saved_configs_of_earlier_versions_still_load() -> None:
    # earlier versions saved every key whatever the algorithm (here a bc_safe run of the study preset)
    old = TrainConfig(algo="bc_safe", threshold=20.0, seed=3, **PRESET_VALUES["study"])
    values = old.to_dict()
    assert "nu_lr" in values and "bc_steps" in values
    cfg = saved_config(values)
    assert type(cfg) is config_class("bc_safe")
    assert cfg.to_dict() == {k: v for k, v in values.items() if k in valid_keys("bc_safe")}
    # a key no algorithm reads is still an error
    with pytest.raises(FeedbackgenError, match="unknown config key 'nu_lrr'"):
        saved_config({**values, "nu_lrr": 1})


def test_a_presa_run_saved_before_the_preference_gate_loads_without_it() -> None:
    values = TrainConfig(algo="presa", threshold=20.0).to_dict()
    del values["pref_gate"]  # runs saved before the key existed trained every preference
    assert saved_config(values).pref_gate == "none"
    assert saved_config({**values, "pref_gate": "safe"}).pref_gate == "safe"


def test_a_saved_config_as_config_file_gives_the_keys_the_algorithm_reads(tmp_path) -> None:
    presa_run = resolve_config(preset="study", overrides={"threshold": 20, "lr": 3e-4})
    f = tmp_path / "config.yaml"
    f.write_text(dump_yaml(presa_run))
    cfg = resolve_config(preset="quick", file_values=load_config_file(f), overrides={"algo": "bc_safe"})
    assert type(cfg) is config_class("bc_safe")
    assert (cfg.lr, cfg.threshold, cfg.total_steps) == (3e-4, 20.0, 3500)
    # a hand-written file is checked strictly
    f.write_text("lr: 0.001\nnu_lr: 0.1\n")
    with pytest.raises(FeedbackgenError, match="'nu_lr' .* for algorithm bc_safe"):
        resolve_config(file_values=load_config_file(f), overrides={"algo": "bc_safe"})


def test_a_train_config_built_for_a_baseline_is_converted() -> None:
    cfg = for_algorithm(TrainConfig(algo="bc_all", threshold=10.0, lr=3e-4))
    assert type(cfg) is config_class("bc_all") and cfg.lr == 3e-4 and cfg.threshold == 10.0
    with pytest.raises(FeedbackgenError, match="'nu_lr' .* for algorithm bc_all"):
        for_algorithm(TrainConfig(algo="bc_all", nu_lr=0.5))
    presa_cfg = TrainConfig()
    assert for_algorithm(presa_cfg) is presa_cfg
