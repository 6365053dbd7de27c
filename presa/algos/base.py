"""The algorithm interface every trainer algorithm implements, and the registry.

An algorithm owns its networks, optimisers and extra state (multipliers, reference points, ...);
the trainer owns the loop, the seed, logging, checkpoints and the run directory. Contract:

- ``Algorithm(cfg, data, generator)`` builds everything on ``data.device``; all randomness comes
  from ``generator`` (a ``torch.Generator`` on that device).
- ``algo.policy`` is the :class:`presa.policy.Policy` that ``presa.checkpoint.load_actor`` exports.
- ``algo.update(step)`` performs one training step (``step`` counts completed steps, from 0) and
  returns a dict of scalar tensors (no ``.item()``) or Python floats, named without the
  ``train/`` prefix; the trainer averages them over each logging interval.
- ``algo.state_dict()`` / ``algo.load_state_dict(sd)`` round-trip everything needed to continue
  bit-identically: after loading a checkpoint taken after step n, ``update(n)`` gives the same
  result as in an uninterrupted run. Values must be tensors, numbers, strings, lists, dicts or None
  (checkpoints are loaded with ``torch.load(weights_only=True)``). The keys ``policy`` (state dict),
  ``optimizer`` (the main optimiser's state dict), ``nu`` and ``zref`` (tensors or None) are
  lifted to the top level of a checkpoint.
- ``Algorithm.check_data(data, cfg)`` rejects a store the algorithm cannot train on with a
  ``FeedbackgenError`` (e.g. no preference pairs).

Register with ``@register("name")``; the class becomes available to ``presa train --algo name``
once its module is imported in ``presa/algos/__init__.py``.

Settings: an algorithm's config class is the type parameter of its base, ``class CPL(
ReferenceAlignment[CPLConfig])``; ``register`` makes it the class's ``config_class``. It is a frozen
dataclass, declared beside the algorithm, holding exactly the keys the algorithm reads: a subclass
of :class:`presa.config.BaseConfig` (the shared keys; :class:`presa.config.AlignmentConfig` for
``ReferenceAlignment``) whose ``algo`` defaults to the algorithm's name and which adds each other
key it reads as ``key: type = TrainConfig.key`` (:class:`presa.config.TrainConfig` is where each
key's type, default and documentation live; ``register`` checks the declaration against it,
:func:`presa.config.check_config_class`). PreSa reads every key: its config is ``TrainConfig``.
``self.cfg`` is an instance of it, so reading a key that is not declared is a type error (mypy) and
fails at run time, and any other key given to the algorithm (``--set``, config file, library call)
is one error line listing the valid ones. Declare exactly the keys the algorithm reads: the
contract tests (``tests/presa/test_algorithm_contract.py``) train and resume every registered
algorithm and fail if it leaves one of its keys unread.

Two ready-made bases cover the common shapes:

- :class:`Algorithm` with :meth:`Algorithm.bc_update` — behaviour cloning over a pool of
  transitions (BC-All, BC-Safe-Seg).
- :class:`ReferenceAlignment` — phase 1 behaviour cloning for ``bc_steps``, then a frozen reference
  whose log-probabilities are computed once for every transition, then ``align_update(step)`` with
  the learning-rate warm-up (PreSa, CPL, safety-only, binary alignment). It provides
  :meth:`ReferenceAlignment.segment_scores`, one forward pass over the distinct segments of a step.
"""

from __future__ import annotations

import contextlib
import difflib
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

import torch

from feedbackgen.errors import FeedbackgenError
from presa import losses
from presa.config import AlignmentConfig, BaseConfig, check_config_class
from presa.data import TrainingData
from presa.policy import Policy, build_policy
from presa.precision import resolve_precision

ALGORITHMS: dict[str, type[Algorithm[Any]]] = {}

#: an algorithm's config class (the type of its ``cfg``)
C = TypeVar("C", bound=BaseConfig)
#: the config class of an algorithm that aligns against a BC reference
A = TypeVar("A", bound=AlignmentConfig)
#: a registered algorithm class
T = TypeVar("T", bound="type[Algorithm[Any]]")

_REF_CHUNK = 65_536
_SCORE_CHUNK = 4_096
#: floor of the reference's residual action variance σ_j² (a policy that fits the data exactly
#: would otherwise make every log-ratio infinite).
ACTION_VAR_FLOOR = 1e-4


def register(name: str) -> Callable[[T], T]:
    """Class decorator that makes an algorithm available by name, with its config class: the type
    parameter of its base (``class CPL(ReferenceAlignment[CPLConfig])``), checked by
    :func:`presa.config.check_config_class`."""
    def deco(cls: T) -> T:
        if name in ALGORITHMS and ALGORITHMS[name] is not cls:
            raise ValueError(f"algorithm {name!r} registered twice")
        config = _config_parameter(cls)
        if config is None:
            raise ValueError(f"algorithm {name!r}: give its config class as the type parameter of its base, "
                             f"e.g. class {cls.__name__}(Algorithm[{cls.__name__}Config])")
        check_config_class(name, config)
        cls.config_class = config
        cls.name = name
        ALGORITHMS[name] = cls
        return cls
    return deco


def _config_parameter(cls: type) -> type[BaseConfig] | None:
    """The config class ``cls`` (or the nearest of its bases) gives as its base's type parameter."""
    for klass in cls.__mro__:
        for base in vars(klass).get("__orig_bases__", ()):
            origin, args = typing.get_origin(base), typing.get_args(base)
            if (isinstance(origin, type) and issubclass(origin, Algorithm) and len(args) == 1
                    and isinstance(args[0], type) and issubclass(args[0], BaseConfig)):
                return args[0]
    return None


def get_algorithm(name: str) -> type[Algorithm[Any]]:
    """The registered class for ``name``.

    Raises:
        FeedbackgenError: unknown name, listing the available ones.
    """
    if name not in ALGORITHMS:
        close = difflib.get_close_matches(name, list(ALGORITHMS), n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise FeedbackgenError(f"unknown algorithm {name!r}{hint}; "
                               f"available: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]


def available_algorithms() -> list[str]:
    return sorted(ALGORITHMS)


class Algorithm(ABC, Generic[C]):
    """Base class: builds the policy and an Adam optimiser over it; subclasses define ``update``.
    ``C`` is the algorithm's config class (see the module docstring)."""

    name: ClassVar[str] = ""
    #: what the algorithm reads from the store (checked by :meth:`check_data`).
    needs_preferences: ClassVar[bool] = False
    needs_safety: ClassVar[bool] = False
    #: its frozen config dataclass, ``C`` (set by :func:`register`).
    config_class: ClassVar[type[BaseConfig]]

    def __init__(self, cfg: C, data: TrainingData, generator: torch.Generator) -> None:
        self.cfg, self.data, self.gen = cfg, data, generator
        self.device = data.device
        #: what the policy computes in during training steps, fp32 or bf16 (presa.precision)
        self.compute_dtype = resolve_precision(cfg.precision, self.device).dtype
        self.policy: Policy = build_policy(cfg.policy, obs_dim=data.obs_dim, act_dim=data.act_dim,
                                           hidden=cfg.hidden, dropout=cfg.dropout,
                                           generator=_cpu_generator(generator)).to(self.device)
        # fused Adam: the same update in one kernel (≈0.3 ms vs 1.1 ms per step on the CPU)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, fused=True)
        self._bc_pool: torch.Tensor | None = None

    @classmethod
    def check_data(cls, data: TrainingData, cfg: C) -> None:
        """Raise ``FeedbackgenError`` if ``data`` lacks what this algorithm needs."""
        if cls.needs_preferences and data.n_pairs == 0:
            raise FeedbackgenError(f"algorithm {cls.name!r} needs preference pairs but the store has none; "
                                   "make the store with preferences")
        if cls.needs_safety and data.n_safety == 0:
            raise FeedbackgenError(f"algorithm {cls.name!r} needs safety labels but the store has none; "
                                   "make the store with safety labels")

    @abstractmethod
    def update(self, step: int) -> dict[str, torch.Tensor | float]:
        """One training step; returns scalar metric tensors (no host sync) or floats."""

    def phase(self, step: int) -> str:
        """Name of the training phase of ``step`` (shown in the progress bar)."""
        return "train"

    # -- helpers for subclasses ---------------------------------------------------------------
    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def bc_update(self, pool: torch.Tensor | None = None) -> dict[str, torch.Tensor | float]:
        """One behaviour-cloning step on ``cfg.bc_batch`` transitions drawn from ``pool`` (transition
        indices; None: every transition of the training episodes), at learning rate ``cfg.lr``."""
        if pool is None:
            pool = self.data.train_transitions
        n = self.data.n_transitions if pool is None else int(pool.shape[0])
        idx = self.data.sample(self.gen, n, self.cfg.bc_batch)
        if pool is not None:
            idx = pool[idx]
        self.policy.train()
        self.set_lr(self.cfg.lr)
        params = self.policy.params(self.data.obs[idx], self.gen, dtype=self.compute_dtype)
        loss = losses.bc_loss(self.policy.log_prob_from_params(params, self.data.actions[idx]))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"bc_loss": loss.detach(), "lr": self.cfg.lr}

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        """No dropout inside the block; the policy's training flag is restored after it."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            yield
        finally:
            self.policy.train(was_training)

    @torch.no_grad()
    def heldout_scores(self, segments: torch.Tensor) -> torch.Tensor:
        """A score per segment for the held-out metrics (no dropout): α·Σ_t γ^t·log π_θ(a_t|s_t)
        with BC's log π = −‖μ − a‖². Alignment algorithms score in calibrated nats instead."""
        out = []
        with self.eval_mode():
            for lo in range(0, int(segments.shape[0]), _SCORE_CHUNK):
                seg = segments[lo:lo + _SCORE_CHUNK]
                rows, weights = self.data.seg_index[seg], self.data.seg_weight[seg]
                params = self.policy.params(self.data.obs[rows.reshape(-1)])
                logp = self.policy.log_prob_from_params(params, self.data.actions[rows.reshape(-1)])
                out.append(self.cfg.alpha * (logp.view(rows.shape) * weights).sum(-1))
        return torch.cat(out)

    def heldout_scorers(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """Metric-name prefix → segment scorer for the trainer's held-out metrics
        (:mod:`presa.heldout`): the policy's own likelihood under ``val/``."""
        return {"val/": self.heldout_scores}

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "nu": None, "zref": None}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.policy.load_state_dict(sd["policy"])
        self.optimizer.load_state_dict(sd["optimizer"])


class PoolBehaviourCloning(Algorithm[C]):
    """Behaviour cloning for all ``total_steps`` on a pool of transition indices ``self.pool``
    that the subclass selects in ``__init__`` (BC-Safe-Seg, BC-Safe)."""

    pool: torch.Tensor

    def phase(self, step: int) -> str:
        return "bc"

    def update(self, step: int) -> dict[str, torch.Tensor | float]:
        out = self.bc_update(self.pool)
        out["pool"] = float(self.pool.shape[0])
        return out


def _cpu_generator(generator: torch.Generator) -> torch.Generator:
    """Weights are initialised on the CPU (same initial weights on every device): a CPU generator
    seeded from ``generator``'s device stream."""
    if generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    return torch.Generator().manual_seed(seed)


def warmup_lr(step: int, cfg: AlignmentConfig) -> float:
    """Learning rate at ``step``: ``lr`` during BC; after it, linear from 0 to ``align_lr`` over
    ``warmup_steps`` (the first alignment step uses align_lr / warmup_steps), then ``align_lr``."""
    if step < cfg.bc_steps:
        return cfg.lr
    if cfg.warmup_steps <= 0:
        return cfg.align_lr
    k = step - cfg.bc_steps + 1
    return cfg.align_lr * min(1.0, k / cfg.warmup_steps)


class ReferenceAlignment(Algorithm[A]):
    """BC for ``bc_steps``, then alignment against the frozen BC policy π_ref.

    When phase 2 starts, the BC weights are kept as the reference and π_ref's parameters and
    log π_ref(a|s) are computed once (eval mode, no dropout) for every transition and cached; the
    checkpoint stores the reference weights and the cache is rebuilt from them on load.
    Subclasses implement :meth:`align_update`; their config classes subclass
    :class:`presa.config.AlignmentConfig` (``bc_steps``, ``align_lr``, ``warmup_steps``).
    """

    def __init__(self, cfg: A, data: TrainingData, generator: torch.Generator) -> None:
        super().__init__(cfg, data, generator)
        self.reference: dict[str, torch.Tensor] | None = None
        self.ref_params: torch.Tensor | None = None  # (N, param_dim)
        self.ref_logp: torch.Tensor | None = None    # (N,) in nats, see Policy.score_log_prob
        self.action_var: torch.Tensor | None = None  # (act,) the reference's residual variance

    def phase(self, step: int) -> str:
        return "bc" if step < self.cfg.bc_steps else "align"

    def update(self, step: int) -> dict[str, torch.Tensor | float]:
        if step < self.cfg.bc_steps:
            return self.bc_update()
        if self.reference is None:
            self.make_reference()
        # Alignment scores π_θ without dropout, as π_ref's cache is computed: with dropout on one
        # side only every log-ratio is biased (docs/method.md, "Scores").
        self.policy.eval()
        lr = warmup_lr(step, self.cfg)
        self.set_lr(lr)
        out = self.align_update(step)
        out["lr"] = lr
        return out

    @abstractmethod
    def align_update(self, step: int) -> dict[str, torch.Tensor | float]:
        """One alignment step (the learning rate is already set)."""

    def make_reference(self) -> None:
        """Freeze the current weights as π_ref and cache its parameters and log-probs."""
        self.reference = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}
        self._cache_reference()

    @torch.no_grad()
    def _cache_reference(self) -> None:
        assert self.reference is not None
        ref = build_policy(self.cfg.policy, obs_dim=self.data.obs_dim, act_dim=self.data.act_dim,
                           hidden=self.cfg.hidden, dropout=self.cfg.dropout).to(self.device)
        ref.load_state_dict(self.reference)
        ref.eval()
        params = [ref.params(self.data.obs[lo:lo + _REF_CHUNK])
                  for lo in range(0, self.data.n_transitions, _REF_CHUNK)]
        self.ref_params = torch.cat(params)
        residual = ref.mean_from_params(self.ref_params) - self.data.actions
        self.action_var = residual.square().mean(0).clamp(min=ACTION_VAR_FLOOR)
        self.ref_logp = torch.cat([
            self.policy.score_log_prob(p, self.data.actions[lo:lo + _REF_CHUNK], p, self.action_var)
            for lo, p in zip(range(0, self.data.n_transitions, _REF_CHUNK), params, strict=True)])

    def segment_scores(self, segments: torch.Tensor, *, with_kl: bool = False,
                       dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """S_θ for ``segments`` (K,) with one forward pass over the steps of their distinct segments.

        A segment that appears more than once in ``segments`` (a pair segment that is also in the
        safety batch, or one drawn twice) is run through the network once; its score is used at
        every position, so the loss and its gradient are those of scoring every position on its own.

        Args:
            dtype: what the policy computes in (None: the run's ``compute_dtype``; the held-out
                metrics pass fp32).

        Returns:
            (scores (K,), per-segment α·Σγ^t·KL(π_θ‖π_ref) (K,) if ``with_kl`` else None).
        """
        assert self.ref_logp is not None and self.ref_params is not None and self.action_var is not None
        unique, inverse = torch.unique(segments, return_inverse=True)
        dedup = unique.shape[0] < segments.shape[0]
        if dedup:
            segments = unique
        rows = self.data.seg_index[segments]              # (K, H)
        weights = self.data.seg_weight[segments]          # (K, H)
        flat = rows.reshape(-1)
        params = self.policy.params(self.data.obs[flat], self.gen,
                                    dtype=self.compute_dtype if dtype is None else dtype)
        ref_params = self.ref_params[flat]
        logp = self.policy.score_log_prob(params, self.data.actions[flat], ref_params,
                                          self.action_var).view(rows.shape)
        scores = losses.segment_scores(logp, self.ref_logp[rows], weights, self.cfg.alpha)
        kl = None
        if with_kl:
            with torch.no_grad():
                kl_rows = self.policy.score_kl(params.detach(), ref_params, self.action_var).view(rows.shape)
                kl = self.cfg.alpha * (kl_rows * weights).sum(-1)
        if dedup:
            scores = scores[inverse]
            kl = kl[inverse] if kl is not None else None
        return scores, kl

    def score_bounds(self, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The largest and the smallest score S_θ each of ``segments`` can reach, (K,) each.

        The largest puts the mean action on every action of the segment; the smallest puts it as
        far away as the action space allows (−inf for the Gaussian, whose pre-tanh mean is
        unbounded). These bound what any policy of this class can score on a segment, whatever
        its weights (docs/method.md, "The attainable ceiling").
        """
        assert self.ref_logp is not None and self.ref_params is not None and self.action_var is not None
        rows = self.data.seg_index[segments]
        weights = self.data.seg_weight[segments]
        flat = rows.reshape(-1)
        best, worst = self.policy.score_log_prob_bounds(self.ref_params[flat], self.data.actions[flat],
                                                        self.action_var)
        ref = self.ref_logp[rows]
        hi = losses.segment_scores(best.view(rows.shape), ref, weights, self.cfg.alpha)
        lo = losses.segment_scores(worst.view(rows.shape), ref, weights, self.cfg.alpha)
        return hi, lo

    @torch.no_grad()
    def heldout_scores(self, segments: torch.Tensor) -> torch.Tensor:
        """The policy's own likelihood α·Σ_t γ^t·log π_θ(a_t|s_t) of ``segments`` (no dropout), in the
        calibrated nats of the scores (S_θ plus the reference's likelihood) once the reference
        exists; before, the BC scores."""
        if self.reference is None:
            return super().heldout_scores(segments)
        return self.implicit_scores(segments) + self.reference_scores(segments)

    @torch.no_grad()
    def implicit_scores(self, segments: torch.Tensor) -> torch.Tensor:
        """S_θ of ``segments`` (no dropout): the implicit reward the losses rank and classify."""
        with self.eval_mode():
            return torch.cat([self.segment_scores(segments[lo:lo + _SCORE_CHUNK], dtype=torch.float32)[0]
                              for lo in range(0, int(segments.shape[0]), _SCORE_CHUNK)])

    def heldout_scorers(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """Once the reference exists, also the implicit reward S_θ (``val/implicit_``) and the BC
        reference's likelihood (``val/ref_``, the baseline)."""
        scorers = super().heldout_scorers()
        if self.reference is not None:
            scorers.update({"val/implicit_": self.implicit_scores, "val/ref_": self.reference_scores})
        return scorers

    @torch.no_grad()
    def reference_scores(self, segments: torch.Tensor) -> torch.Tensor:
        """α·Σ_t γ^t·log π_ref(a_t|s_t) of ``segments``: the BC reference's own likelihood as a score,
        the baseline the held-out accuracies of alignment are compared with."""
        assert self.ref_logp is not None
        rows = self.data.seg_index[segments]
        return self.cfg.alpha * (self.ref_logp[rows] * self.data.seg_weight[segments]).sum(-1)

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["reference"] = self.reference
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        super().load_state_dict(sd)
        self.reference = sd.get("reference")
        if self.reference is not None:
            self._cache_reference()
        else:
            self.ref_params = self.ref_logp = self.action_var = None
