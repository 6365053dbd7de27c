"""Training configuration: a frozen dataclass per algorithm, resolved from layered sources.

Precedence, lowest first::

    field defaults  <  suite defaults (from the store's task)  <  preset (quick|full|study)
                    <  --config file.yaml  <  explicit CLI options and --set key=value

Every option of the method (``docs/method.md``) is a field of :class:`TrainConfig`, PreSa's
config, which reads them all. Each key is defined once (type, default, documentation; its checks
are in one function for every class): the shared ones in :class:`BaseConfig` (steps, BC batch,
learning rate, seed, threads, policy network, logging, ...), the three of the algorithms that align
against a behaviour-cloned reference in :class:`AlignmentConfig`, the others in TrainConfig. Every
other algorithm has its own frozen config dataclass, declared next to it in
``presa/algos/<name>.py``, holding only the keys it reads: a subclass of BaseConfig (or
AlignmentConfig) that adds the keys it reads as ``key: type = TrainConfig.key``, with TrainConfig's
type and default (:func:`check_config_class`). A key the run's algorithm does not read is one error
line listing the keys it does (:func:`check_keys`), whether it comes from ``--set``, a config file
or a library call. Suite defaults and presets are recipes for every algorithm: they set only the
keys the run's algorithm reads.

The resolved config is written as ``config.yaml`` into every run directory and into every
checkpoint. Run directories of earlier versions hold every key of TrainConfig whatever their
algorithm; :func:`saved_config` reads them (the keys their algorithm did not read had no effect on
the run and are dropped).

Example:
    >>> cfg = resolve_config(suite="bullet", preset="quick", overrides={"threshold": 20, "seed": 1})
    >>> cfg.alpha, cfg.threshold, cfg.total_steps > cfg.bc_steps
    (0.2, 20.0, True)
    >>> bc = resolve_config(suite="bullet", preset="study", overrides={"algo": "bc_safe"})
    >>> type(bc).__name__, "nu_lr" in bc.valid_keys(), "nu_lr" in cfg.valid_keys()
    ('BCSafeConfig', False, True)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Self

import yaml

from feedbackgen._io import read_yaml_mapping
from feedbackgen.errors import FeedbackgenError

SUITES = ("bullet", "safety_gymnasium", "metadrive")
PRESETS = ("full", "quick", "study")
ZREF_MODES = ("ema", "batch", "kl", "zero")
NU_RULES = ("sgd", "pid")
PREF_GATES = ("none", "not_unsafe", "safe")
POLICY_KINDS = ("deterministic", "gaussian")
PRECISIONS = ("auto", "fp32", "bf16")
SAFETY_DRAWS = ("pairs", "independent")

# Per-suite defaults (docs/method.md, "Defaults"). η is class-balanced (1) in every suite: with the
# specification's 0.25 / 0.5 the unsafe class carried a fifth of g_θ and the scores separated the
# classes far less on held-out segments (docs/method.md, "Choosing the defaults").
SUITE_DEFAULTS: dict[str, dict[str, Any]] = {
    "bullet": {"total_steps": 100_000, "bc_steps": 30_000, "alpha": 0.2, "gamma": 0.99},
    "safety_gymnasium": {"total_steps": 100_000, "bc_steps": 30_000, "alpha": 0.1, "gamma": 0.99},
    "metadrive": {"total_steps": 200_000, "bc_steps": 60_000, "alpha": 0.2, "gamma": 1.0},
}

# Presets are applied on top of the suite defaults. ``full`` is the method as specified (the suite
# defaults themselves); ``quick`` is a few thousand steps on smaller batches for demos and tests
# (well under a minute of CPU on the shipped datasets) and does not reach the full preset's numbers.
# It runs on one thread: on a shared or oversubscribed CPU two OpenMP threads were 5× slower here
# (BallRun-mini quick run: 38 s CPU with 1 thread, 242 s with 2 at load 12), and one thread gives
# the same numbers on any machine.
# Suite defaults and presets are recipes for every algorithm: a run takes from them only the keys
# its algorithm reads (``bc_safe --preset study`` leaves out nu_lr, bc_steps, pair_batch, ...).
PRESET_VALUES: dict[str, dict[str, Any]] = {
    "full": {},
    "quick": {"total_steps": 2_000, "bc_steps": 1_000, "pair_batch": 32, "safety_batch": 32,
              "bc_batch": 256, "warmup_steps": 200, "align_lr": 3e-5, "log_every": 50,
              "checkpoint_every": 500, "threads": 1},
    # ``study``: the benchmark study's preset (a few minutes of one CPU thread per run on the shipped
    # datasets; docs/method.md, "Presets"). BC 2,000 steps (the BC loss is flat from ~1,200 steps on
    # BallRun-mini), then 1,500 alignment steps on 64+64 batches at align_lr 3e-4. The PID dual's
    # integral gain is 30× the full preset's, as the learning rate is 30× larger: with the full
    # preset's 1e-2 (or plain dual ascent at 3e-2) ν was still rising linearly at the end and g_θ
    # stayed under δ on BallRun-mini κ=20; with 0.3 it reached δ within the run.
    "study": {"total_steps": 3_500, "bc_steps": 2_000, "pair_batch": 64, "safety_batch": 64,
              "bc_batch": 256, "warmup_steps": 200, "align_lr": 3e-4, "nu_lr": 0.3, "log_every": 100,
              "checkpoint_every": 1_000, "threads": 1},
}

# Options that may change when a run is resumed (they do not change the math of a step).
RESUME_MUTABLE = ("total_steps", "log_every", "checkpoint_every")

# Every key, in the order config.yaml lists them (the order of the one flat config of earlier versions).
KEYS = ("algo", "threshold", "seed", "device", "threads", "precision", "alpha", "gamma", "eta", "delta",
        "delta_fraction", "delta_margin", "beta_safe", "lambda_cb", "pref_gate", "beta_s", "zref_mode",
        "zref_momentum", "zref_clamp", "nu_init", "nu_lr", "nu_max", "nu_rule", "pid_kp", "pid_kd",
        "bc_steps", "total_steps", "pair_batch", "safety_batch", "safety_draw", "bc_batch", "policy",
        "hidden", "dropout", "lr", "align_lr", "warmup_steps", "log_every", "checkpoint_every",
        "label_sources")

# Keys added after runs were saved without them, with the value that reproduces such a run where
# that is not today's default: a saved config.yaml without the key was made with this value
# (:func:`saved_config`). Only keys the run's algorithm reads are applied.
KEYS_ADDED_LATER: dict[str, Any] = {"safety_draw": "independent", "pref_gate": "none"}


@dataclass(frozen=True)
class BaseConfig:
    """The settings every algorithm reads (the trainer, the data, the policy network and its
    optimiser). Immutable; validated on construction. Each algorithm's config class adds the keys
    it reads beyond these (:class:`TrainConfig` has them all).

    Attributes:
        algo: registered algorithm name (``presa``, ``bc_all``, ...; see ``presa.algos``).
        threshold: episode cost threshold κ; must be one of the store's thresholds.
        seed: the one seed of the run (torch.Generator for batches, dropout and init).
        device: ``cpu`` or ``cuda`` / ``cuda:N``.
        threads: CPU threads for torch (0: torch's default). Results are reproducible for the same
            device and thread count; on a busy machine 1 thread can be faster for small networks.
        precision: ``auto`` (default: bf16 where the device computes it natively, i.e. a CPU with
            AVX-512 BF16 / AMX or a bf16-capable GPU, else fp32), ``fp32`` or ``bf16`` (the policy's
            layers compute in bf16 in training steps; weights, optimiser, scores and losses stay
            fp32; see :mod:`presa.precision`). A run records the resolved value in its ``config.yaml`` (and
            what was asked, and why, in ``run.json``), so a resumed run keeps it on any machine.
            bf16 and fp32 runs reach the same evaluation results within the seed spread
            (``results/precision``).
        alpha: temperature α > 0 of the segment score S_θ (and of the held-out ``val/`` scores of
            every algorithm).
        gamma: within-segment discount γ ∈ (0, 1] (segment scores, held-out scores included).
        total_steps: all gradient steps, BC included.
        bc_batch: transitions per behaviour-cloning step (per RL step for ``two_stage``).
        policy: ``deterministic`` (tanh MLP, log π = −‖μ − a‖²) or ``gaussian`` (tanh-squashed).
        hidden: hidden layer sizes of the policy MLP (and of ``two_stage``'s models and critics).
        dropout: dropout probability on hidden layers, in [0, 1).
        lr: Adam learning rate of the BC phase (of every step for the BC baselines and ``two_stage``).
        log_every: steps between metric records (metrics are averaged over the interval).
        checkpoint_every: steps between periodic checkpoints (0: final checkpoint only).
        label_sources: which labels to train on, by source (``feedbackgen.labels.select_sources``):
            ``all`` (default), the kinds ``human`` / ``teacher``, or source ids (``human:alice``).
    """

    algo: str = "presa"
    threshold: float | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    precision: str = "auto"
    alpha: float = 0.2
    gamma: float = 0.99
    total_steps: int = 100_000
    bc_batch: int = 1024
    policy: str = "deterministic"
    hidden: tuple[int, ...] = field(default=(256, 256))
    dropout: float = 0.25
    lr: float = 1e-4
    log_every: int = 100
    checkpoint_every: int = 10_000
    label_sources: tuple[str, ...] = ("all",)

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def valid_keys(cls) -> tuple[str, ...]:
        """The keys of this config class, in :data:`KEYS` order."""
        names = {f.name for f in fields(cls)}
        return tuple(k for k in KEYS if k in names)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-able values (tuples become lists), in :data:`KEYS` order."""
        out = {k: getattr(self, k) for k in self.valid_keys()}
        out["hidden"] = list(self.hidden)
        out["label_sources"] = list(self.label_sources)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build from a mapping of field names, coercing strings/lists to field types.

        Raises:
            FeedbackgenError: keys this class does not have (one line listing the valid ones), bad
                types or bad values.
        """
        _check(values, cls.valid_keys(), str(values.get("algo") or _default_algo(cls)))
        return cls(**{k: _coerce(k, v) for k, v in values.items()})

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (and validated)."""
        _check(changes, self.valid_keys(), self.algo)
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in changes.items()})


#: the keys every algorithm reads (the fields of :class:`BaseConfig`).
SHARED_KEYS = BaseConfig.valid_keys()


@dataclass(frozen=True)
class AlignmentConfig(BaseConfig):
    """The settings of the algorithms that behaviour-clone a reference policy and then align against
    it (:class:`presa.algos.ReferenceAlignment`: PreSa, CPL, ...): the shared ones and these.

    Attributes:
        bc_steps: behaviour-cloning steps (phase 1), counted within ``total_steps``.
        align_lr: learning rate of the alignment phase, reached after the warm-up.
        warmup_steps: linear warm-up from 0 to ``align_lr`` after BC (0: no warm-up).
    """

    bc_steps: int = 30_000
    align_lr: float = 1e-5
    warmup_steps: int = 10_000


@dataclass(frozen=True)
class TrainConfig(AlignmentConfig):
    """Every option of a training run: PreSa's config, and the one definition (type, default,
    documentation) of each key that some algorithm reads beyond :class:`AlignmentConfig`'s. Another
    algorithm's config class declares such a key as ``key: type = TrainConfig.key``.

    Attributes:
        eta: weight ratio η > 0 of unsafe to safe segments in g_θ.
        delta: constraint level δ ∈ (0, 1) of g_θ ≥ δ; None (default): chosen from the store's
            attainable ceiling of g_θ, δ = ½ + delta_fraction·(ceiling − ½) (presa.ceiling). A given
            δ at or above the ceiling is refused with one error line when alignment starts.
        delta_fraction: ρ ∈ (0, 1) of the default δ rule.
        delta_margin: the multiplier drives g_θ towards δ + margin (capped halfway to the ceiling),
            so that g_θ ≥ δ holds in most logging intervals rather than half of them.
        lambda_cb: conservative bias λ_cb ∈ (0, 1] of the preference loss.
        pref_gate: ``safe`` (default: a preference counts only when the segment it prefers is
            labelled safe at the run's threshold), ``not_unsafe`` (unless that segment is labelled
            unsafe) or ``none`` (every preference counts): the gate keeps the preferences from
            pulling towards behaviour the safety labels reject (docs/method.md, "Preference gate").
        beta_s: slope β_s > 0 of the safety value sigmoid.
        beta_safe: slope of the safety value of segments labelled safe (None: ``beta_s``; default 5).
            A larger
            slope saturates it once a safe segment is clearly at least as likely as under π_ref, so
            the safety term stops ranking safe segments among themselves (by how far they are from
            unsafe ones) and leaves that ranking to the preferences.
        zref_mode: reference point z_ref: ``zero`` (default: a score is measured against π_ref
            itself) | ``ema`` | ``batch`` | ``kl``.
        zref_momentum: momentum of the ``ema`` reference point, in [0, 1).
        zref_clamp: clamp the ``ema``/``batch`` reference point at ≥ 0 (method.md; False lets it go
            negative, which keeps g_θ ≥ δ reachable for a deterministic policy).
        nu_init: initial Lagrange multiplier ν_0 ≥ 0.
        nu_lr: dual step size lr_ν > 0 (also the integral gain of ``pid``).
        nu_max: upper clip of ν.
        nu_rule: ``sgd`` (projected dual ascent) or ``pid`` (PID Lagrangian).
        pid_kp: proportional gain of the PID rule.
        pid_kd: derivative gain of the PID rule.
        pair_batch: preference pairs per alignment step.
        safety_batch: safety-labelled segments per alignment step.
        safety_draw: how PreSa draws the safety batch. ``pairs`` (default): when the store's safety
            segments are its pairs' first segments, one safety row per pair (``feedbackgen make``'s
            default), the safety rows of the step's pairs — each row is still uniform over the safety
            table, and the step runs each distinct segment through the network once;
            otherwise, and with ``independent``, drawn on their own (what runs made before this
            option did; a saved config without the key reads as ``independent``,
            :data:`KEYS_ADDED_LATER`).
    """

    eta: float = 1.0
    delta: float | None = None
    delta_fraction: float = 0.5
    delta_margin: float = 0.02
    beta_safe: float | None = 5.0
    lambda_cb: float = 1.0
    pref_gate: str = "safe"
    beta_s: float = 1.0
    zref_mode: str = "zero"
    zref_momentum: float = 0.9
    zref_clamp: bool = True
    nu_init: float = 1.0
    nu_lr: float = 1e-2
    nu_max: float = 100.0
    nu_rule: str = "pid"
    pid_kp: float = 10.0
    pid_kd: float = 0.0
    pair_batch: int = 96
    safety_batch: int = 96
    safety_draw: str = "pairs"


if set(TrainConfig.valid_keys()) != set(KEYS) or len(KEYS) != len(fields(TrainConfig)):  # pragma: no cover
    raise RuntimeError("presa.config.KEYS must list every TrainConfig field once")


def check_config_class(algo: str, cls: type[BaseConfig]) -> None:
    """Check that ``cls`` can be algorithm ``algo``'s config class (:func:`presa.algos.register` calls
    it): a frozen dataclass of its own that subclasses :class:`BaseConfig`, whose ``algo`` defaults to
    ``algo``, and whose other keys are TrainConfig keys with TrainConfig's type and default, so that
    each key has one definition however many algorithms read it.

    Raises:
        ValueError: a programming error, naming the key and what to write.
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseConfig)) or "__dataclass_fields__" not in vars(cls):
        raise ValueError(f"algorithm {algo!r}: its config class {cls!r} must be a subclass of BaseConfig "
                         "decorated @dataclass(frozen=True)")
    default = _default_algo(cls)
    if default != algo:
        raise ValueError(f"algorithm {algo!r}: its config class defaults algo to {default!r}")
    spec = {f.name: f for f in fields(TrainConfig)}
    hints, own = typing.get_type_hints(TrainConfig), typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name == "algo":
            continue
        if f.name not in spec:
            raise ValueError(f"algorithm {algo!r}: {cls.__name__}.{f.name} is not a TrainConfig field; "
                             "add it there first")
        if own[f.name] != hints[f.name] or f.default != spec[f.name].default:
            tp = hints[f.name]
            type_name = tp.__name__ if isinstance(tp, type) else str(tp)
            raise ValueError(f"algorithm {algo!r}: {cls.__name__}.{f.name} must have TrainConfig's type and "
                             f"default; declare it as `{f.name}: {type_name} = TrainConfig.{f.name}`")


def _default_algo(cls: type[BaseConfig]) -> str:
    return str(cls.__dataclass_fields__["algo"].default)


def config_class(algo: str) -> type[BaseConfig]:
    """The config class registered with algorithm ``algo``.

    Raises:
        FeedbackgenError: unknown algorithm, listing the available ones.
    """
    from presa.algos import get_algorithm

    return get_algorithm(algo).config_class


def valid_keys(algo: str) -> tuple[str, ...]:
    """The keys algorithm ``algo`` reads (:data:`KEYS` order); every other key is an error for it."""
    return config_class(algo).valid_keys()


def applicable(values: dict[str, Any], algo: str) -> dict[str, Any]:
    """The entries of ``values`` whose keys algorithm ``algo`` reads (how suite defaults, presets,
    grid-wide sweep options and saved configs are applied to it)."""
    keys = valid_keys(algo)
    return {k: v for k, v in values.items() if k in keys}


def field_names() -> list[str]:
    """Every key of any algorithm (:data:`KEYS`)."""
    return list(KEYS)


def check_keys(values: dict[str, Any], algo: str | None = None) -> None:
    """Raise one clear error for keys that algorithm ``algo`` does not read (None: that no algorithm
    reads), naming the closest valid ones or the algorithms that do read them, and listing the valid
    keys."""
    _check(values, KEYS if algo is None else valid_keys(algo), algo)


def _check(values: dict[str, Any], valid: tuple[str, ...], algo: str | None) -> None:
    bad = [k for k in values if k not in valid]
    if not bad:
        return
    parts = []
    for k in bad:
        users = _readers(k) if k in KEYS else []
        if users:
            parts.append(f"'{k}' (only {', '.join(users)} read it)")
        else:
            close = difflib.get_close_matches(str(k), valid, n=3, cutoff=0.5)
            parts.append(f"'{k}'" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    where = f" for algorithm {algo}" if algo is not None else ""
    raise FeedbackgenError(f"unknown config key{'s' if len(bad) > 1 else ''} {'; '.join(parts)}{where}; "
                           f"valid keys: {', '.join(valid)}")


def _readers(key: str) -> list[str]:
    from presa.algos import ALGORITHMS

    return sorted(name for name, cls in ALGORITHMS.items() if key in cls.config_class.valid_keys())


def is_saved_config(values: dict[str, Any]) -> bool:
    """Whether ``values`` is a resolved config as runs save it (``config.yaml``, by this version or an
    earlier one): it holds every shared key. Hand-written config files set a few keys."""
    return set(SHARED_KEYS) <= set(values)


def saved_config(values: dict[str, Any]) -> BaseConfig:
    """A run's saved config (its ``config.yaml``) as an instance of its algorithm's config class.

    Earlier versions saved every key of :class:`TrainConfig` whatever the algorithm; the keys the
    run's algorithm does not read had no effect on it and are dropped. A key the run predates takes
    the value the run was made with (:data:`KEYS_ADDED_LATER`: no ``safety_draw`` reads as
    ``independent``), not today's default; ``precision`` is what the run recorded (what ``auto``
    resolved to on its machine), so a resumed run keeps it.

    Example:
        >>> old = {**TrainConfig(threshold=4.0).to_dict(), "precision": "fp32"}
        >>> del old["safety_draw"]
        >>> saved_config(old).safety_draw, saved_config({**old, "algo": "bc_all"}).precision
        ('independent', 'fp32')

    Raises:
        FeedbackgenError: an unknown algorithm, a key no algorithm reads, or a bad value.
    """
    check_keys(values)
    algo = str(values.get("algo") or "presa")
    return config_class(algo).from_dict(applicable({**KEYS_ADDED_LATER, **values}, algo))


def for_algorithm(cfg: BaseConfig) -> BaseConfig:
    """``cfg`` as an instance of its algorithm's config class (``cfg`` itself if it is one).

    A config of another class, e.g. a :class:`TrainConfig` (every key) built for a baseline, is
    converted; a key the algorithm does not read must then hold its default, else it is the
    unknown-key error of :func:`check_keys`.
    """
    cls = config_class(cfg.algo)
    if isinstance(cfg, cls):
        return cfg
    values = cfg.to_dict()
    defaults = TrainConfig().to_dict()
    check_keys({k: v for k, v in values.items() if k not in cls.valid_keys() and v != defaults.get(k)},
               cfg.algo)
    return cls.from_dict(applicable(values, cfg.algo))


def _field_type(name: str) -> Any:
    hints = typing.get_type_hints(TrainConfig)
    return hints[name]


def _coerce(name: str, value: Any) -> Any:
    """Convert ``value`` (from YAML, a ``--set`` string, or Python) to field ``name``'s type."""
    tp = _field_type(name)
    args = typing.get_args(tp)
    optional = type(None) in args
    if optional:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        tp = next(a for a in args if a is not type(None))
    try:
        if typing.get_origin(tp) is tuple and typing.get_args(tp)[0] is str:
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(value)
            return tuple(v.strip() for v in value)
        if typing.get_origin(tp) is tuple:
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
            if isinstance(value, int | float):
                value = [value]
            return tuple(_to_int(v) for v in value)
        if tp is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return low in ("true", "1", "yes")
            return bool(value)
        if tp is int:
            return _to_int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        raise FeedbackgenError(f"config key '{name}' expects {_type_name(tp)}, got {value!r}") from None
    return value  # pragma: no cover - every field type is handled above


def _to_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(v)
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError(v)
        return int(v)
    if isinstance(v, str):
        f = float(v.replace("_", ""))
        if not f.is_integer():
            raise ValueError(v)
        return int(f)
    return int(v)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "a list of strings" if typing.get_args(tp)[0] is str else "a list of integers"
    if isinstance(tp, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _validate(c: BaseConfig) -> None:
    """The checks of every key ``c`` has (a config class has only its algorithm's keys)."""
    has = set(type(c).valid_keys())
    extra: Any = c  # the keys beyond BaseConfig's, read where ``has`` holds them

    def bad(msg: str) -> None:
        raise FeedbackgenError(msg)

    def choice(name: str, allowed: tuple[str, ...]) -> None:
        if name in has and getattr(c, name) not in allowed:
            bad(f"{name} must be one of {', '.join(allowed)}, got {getattr(c, name)!r}")

    def finite(name: str) -> float:
        v = getattr(c, name)
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            bad(f"{name} must be a finite number, got {v!r}")
        return float(v)

    def get(name: str) -> Any:
        return getattr(c, name) if name in has else None

    for name in ("alpha", "gamma", "eta", "delta_fraction", "delta_margin", "lambda_cb", "beta_s",
                 "zref_momentum", "nu_init", "nu_lr", "nu_max", "pid_kp", "pid_kd", "dropout", "lr",
                 "align_lr"):
        if name in has:
            finite(name)
    if get("delta") is not None and (finite("delta") <= 0.0 or extra.delta >= 1.0):
        bad(f"delta must be in (0, 1) (the constraint is g_θ ≥ δ with g_θ ∈ (0, 1)), got {extra.delta:g}; "
            "leave it unset for the default from the store's ceiling, or use e.g. --set delta=0.7")
    if "delta_fraction" in has and not 0.0 < extra.delta_fraction < 1.0:
        bad(f"delta_fraction must be in (0, 1), got {extra.delta_fraction:g}")
    if get("beta_safe") is not None and (finite("beta_safe") <= 0.0):
        bad(f"beta_safe must be > 0, got {extra.beta_safe:g}")
    if "delta_margin" in has and extra.delta_margin < 0.0:
        bad(f"delta_margin must be >= 0, got {extra.delta_margin:g}")
    if c.alpha <= 0:
        bad(f"alpha must be > 0, got {c.alpha:g}")
    if not 0.0 < c.gamma <= 1.0:
        bad(f"gamma must be in (0, 1], got {c.gamma:g}")
    if "eta" in has and extra.eta <= 0:
        bad(f"eta must be > 0, got {extra.eta:g}")
    if "lambda_cb" in has and not 0.0 < extra.lambda_cb <= 1.0:
        bad(f"lambda_cb must be in (0, 1], got {extra.lambda_cb:g}")
    if "beta_s" in has and extra.beta_s <= 0:
        bad(f"beta_s must be > 0, got {extra.beta_s:g}")
    if "zref_momentum" in has and not 0.0 <= extra.zref_momentum < 1.0:
        bad(f"zref_momentum must be in [0, 1), got {extra.zref_momentum:g}")
    if "nu_max" in has and extra.nu_max <= 0:
        bad(f"nu_max must be > 0, got {extra.nu_max:g}")
    if "nu_init" in has:
        if "nu_max" in has and not 0.0 <= extra.nu_init <= extra.nu_max:
            bad(f"nu_init must be in [0, nu_max={extra.nu_max:g}], got {extra.nu_init:g}")
        if extra.nu_init < 0.0:
            bad(f"nu_init must be ≥ 0, got {extra.nu_init:g}")
    if "nu_lr" in has and extra.nu_lr <= 0:
        bad(f"nu_lr must be > 0, got {extra.nu_lr:g}")
    if ("pid_kp" in has and extra.pid_kp < 0) or ("pid_kd" in has and extra.pid_kd < 0):
        bad("pid_kp and pid_kd must be ≥ 0")
    if not 0.0 <= c.dropout < 1.0:
        bad(f"dropout must be in [0, 1), got {c.dropout:g}")
    if c.lr <= 0 or ("align_lr" in has and extra.align_lr <= 0):
        bad("lr and align_lr must be > 0" if "align_lr" in has else f"lr must be > 0, got {c.lr:g}")
    choice("zref_mode", ZREF_MODES)
    choice("nu_rule", NU_RULES)
    choice("pref_gate", PREF_GATES)
    choice("policy", POLICY_KINDS)
    choice("precision", PRECISIONS)
    choice("safety_draw", SAFETY_DRAWS)
    for name in ("seed", "threads", "bc_steps", "total_steps", "pair_batch", "safety_batch", "bc_batch",
                 "warmup_steps", "log_every", "checkpoint_every"):
        v = get(name)
        if name in has and (not isinstance(v, int) or isinstance(v, bool)):
            bad(f"{name} must be an integer, got {v!r}")
    if c.threads < 0:
        bad(f"threads must be ≥ 0 (0: torch's default), got {c.threads}")
    if c.seed < 0:
        bad(f"seed must be ≥ 0, got {c.seed}")
    if "bc_steps" in has:
        if c.total_steps < 1 or extra.bc_steps < 0 or extra.bc_steps > c.total_steps:
            bad(f"need 0 ≤ bc_steps ≤ total_steps and total_steps ≥ 1, got bc_steps={extra.bc_steps}, "
                f"total_steps={c.total_steps}")
    elif c.total_steps < 1:
        bad(f"total_steps must be ≥ 1, got {c.total_steps}")
    for name in ("pair_batch", "safety_batch", "bc_batch", "log_every"):
        if name in has and getattr(c, name) < 1:
            bad(f"{name} must be ≥ 1, got {getattr(c, name)}")
    if ("warmup_steps" in has and extra.warmup_steps < 0) or c.checkpoint_every < 0:
        bad("warmup_steps and checkpoint_every must be ≥ 0" if "warmup_steps" in has
            else f"checkpoint_every must be ≥ 0, got {c.checkpoint_every}")
    if not c.hidden or any((not isinstance(h, int)) or h < 1 for h in c.hidden):
        bad(f"hidden must be a non-empty list of positive integers, got {list(c.hidden)!r}")
    if not c.label_sources or any(not isinstance(s, str) or not s.strip() for s in c.label_sources):
        bad(f"label_sources must be a non-empty list of source ids or kinds (all, human, teacher), "
            f"got {list(c.label_sources)!r}")
    if not isinstance(c.algo, str) or not c.algo:
        bad("algo must be a non-empty name")
    if c.threshold is not None:
        if not isinstance(c.threshold, int | float) or not math.isfinite(c.threshold) or c.threshold < 0:
            bad(f"threshold must be a finite number ≥ 0, got {c.threshold!r}")
    if not (c.device == "cpu" or c.device == "cuda" or c.device.startswith("cuda:")):
        bad(f"device must be cpu, cuda or cuda:N, got {c.device!r}")


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """Parse ``--set key=value`` items; values are read as YAML scalars/lists (``hidden=[64,64]``).

    Raises:
        FeedbackgenError: an item without ``=``, or a key no algorithm reads (whether the run's
            algorithm reads it is checked by :func:`resolve_config`).
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise FeedbackgenError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key] = value
    check_keys(out)
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of config keys (e.g. a run's resolved ``config.yaml``).

    Raises:
        FeedbackgenError: missing/unreadable file, not a mapping, or a key no algorithm reads
            (whether the run's algorithm reads it is checked by :func:`resolve_config`).
    """
    data = read_yaml_mapping(path, "config file", "of config keys, got {type}")
    if not data:
        return {}
    check_keys(data)
    return data


def resolve_config(*, suite: str | None = None, preset: str | None = None,
                   file_values: dict[str, Any] | None = None,
                   overrides: dict[str, Any] | None = None) -> BaseConfig:
    """Layer the sources in precedence order and validate once, into the config class of the
    algorithm they name (``algo`` of ``overrides``, else of ``file_values``, else ``presa``).

    Suite defaults and presets set only the keys the algorithm reads. ``file_values`` and
    ``overrides`` must hold only such keys, except that a saved run config used as ``file_values``
    (:func:`is_saved_config`, e.g. another algorithm's ``config.yaml``, or one of an earlier version
    that saved every key) contributes only the keys the algorithm reads.

    Args:
        suite: the store's task suite (``bullet``, ``safety_gymnasium``, ``metadrive``) or None.
        preset: ``full``, ``quick`` or ``study`` (None: ``full``).
        file_values: values from ``--config file.yaml``.
        overrides: explicit CLI options and ``--set`` values (highest precedence).

    Raises:
        FeedbackgenError: unknown algorithm/suite/preset, a key the algorithm does not read (one line
            listing the keys it reads), or invalid values.
    """
    file_values, overrides = dict(file_values or {}), dict(overrides or {})
    algo = overrides["algo"] if "algo" in overrides else file_values.get("algo", "presa")
    if not isinstance(algo, str) or not algo:
        raise FeedbackgenError(f"algo must be a non-empty name, got {algo!r}")
    cls = config_class(algo)
    values: dict[str, Any] = {}
    if suite is not None:
        if suite not in SUITE_DEFAULTS:
            raise FeedbackgenError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
        values.update(applicable(SUITE_DEFAULTS[suite], algo))
    preset = preset or "full"
    if preset not in PRESET_VALUES:
        raise FeedbackgenError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values.update(applicable(PRESET_VALUES[preset], algo))
    if is_saved_config(file_values):
        check_keys(file_values)
        file_values = applicable(file_values, algo)
    for layer in (file_values, overrides):
        check_keys(layer, algo)
        values.update(layer)
    values["algo"] = algo
    return cls.from_dict(values)


def dump_yaml(cfg: BaseConfig) -> str:
    """The resolved config as YAML (in :data:`KEYS` order)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
