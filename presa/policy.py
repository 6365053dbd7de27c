"""Policies: MLPs over normalised observations with explicit-generator dropout.

Two classes, as in method.md ("Policy"):

- :class:`DeterministicPolicy` — obs → hidden → … → action, ReLU, dropout on hidden layers, tanh
  output μ_θ(s). Behaviour cloning minimises ``‖μ_θ(s) − a‖²``; the alignment scores use
  ``log π(a|s) = −Σ_j (μ_j − a_j)² / (2σ_j²)``, a Gaussian whose per-dimension variance σ_j² is
  the reference policy's residual variance (:meth:`Policy.score_log_prob`), so that log-ratios
  are in nats (docs/method.md, "Scores").
- :class:`GaussianPolicy` — a tanh-squashed Gaussian with state-dependent log-std clamped to
  [−5, 2]; the mean action is ``tanh(mean)``.

Every policy maps observations to a parameter tensor (``params``); log-probabilities, mean actions
and KL divergences are computed from those parameters, so one forward pass serves all of them and
the reference policy's parameters can be cached per transition.

Dropout draws its masks from the ``torch.Generator`` passed to :meth:`Policy.params`, never from
global RNG state, so the same seed gives the same weights. Initial weights are drawn from a
generator too (PyTorch's default ``nn.Linear`` ranges).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> pi = build_policy("deterministic", obs_dim=3, act_dim=2, hidden=(16, 16), dropout=0.25, generator=g)
    >>> pi.eval().mean_action(torch.zeros(4, 3)).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, cast

import torch
from torch import nn

from feedbackgen.errors import FeedbackgenError

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0
_ATANH_EPS = 1e-6

POLICY_CLASSES: dict[str, type[Policy]] = {}


def register_policy(name: str) -> Callable[[type[Policy]], type[Policy]]:
    """Class decorator: make a policy class buildable by name (and loadable by ``load_actor``)."""
    def deco(cls: type[Policy]) -> type[Policy]:
        cls.kind = name
        POLICY_CLASSES[name] = cls
        return cls
    return deco


def dropout_mask(shape: torch.Size | tuple[int, ...], p: float, generator: torch.Generator | None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An inverted-dropout mask: 1/(1 − p) with probability 1 − p, else 0, drawn from ``generator``.

    When 256·p is an integer (p = 0.25, 0.5, ...) the mask comes from random bytes — one 64-bit
    draw per 8 units, unit kept iff its byte ≥ 256·p: exactly Bernoulli(1 − p) — which is several
    times cheaper on the CPU than one float draw per unit (``bernoulli_`` was ≈ 10× slower, see
    benchmarks/README.md); the 0/1 decision is taken on the bytes (uint8 operations move a quarter
    of the memory of float ones) before one conversion and one in-place scaling make the float
    mask. Otherwise the mask comes from uniform floats (u ≥ p).
    """
    numel = math.prod(shape)
    k = p * 256.0
    if k == int(k) and numel % 8 == 0:
        bits = torch.empty(numel // 8, dtype=torch.int64, device=device)
        bits.random_(-(2**63), None, generator=generator)  # full 64-bit range: 8 uniform bytes
        keep = bits.view(torch.uint8).view(shape).clamp(min=int(k) - 1)
        keep = keep.sub_(int(k) - 1).clamp_(max=1)          # uint8: 1 iff byte ≥ k, else 0
    else:
        u = torch.empty(shape, dtype=torch.float32, device=device).uniform_(generator=generator)
        keep = u >= p
    return keep.to(dtype).mul_(1.0 / (1.0 - p))             # 0 or 1/(1 − p)


def dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout with masks drawn from ``generator``: keep each unit with probability 1 − p.

    Same math as ``torch.nn.functional.dropout`` (kept units are scaled by 1/(1 − p)), but with an
    explicit generator, and a multiply by a float mask (cheaper forward and backward on the CPU
    than a boolean ``where``).
    """
    if p <= 0.0:
        return x
    return x * dropout_mask(x.shape, p, generator, x.device, x.dtype)


class _InputLinear(torch.autograd.Function):
    """``x @ W.T + b`` for an input that needs no gradient (the observations).

    Same math as ``nn.functional.linear``; the weight gradient is computed as ``(xᵀ·g)ᵀ`` instead
    of autograd's ``gᵀ·x``: with few input features (8) and thousands of rows, MKL runs the former
    about 7× faster on the CPU (0.7 ms vs 4.9 ms for 5,760 × 8 → 256).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[None, torch.Tensor | None, torch.Tensor | None]:
        (grad,) = grads  # the gradient of forward's one output
        (x,) = ctx.saved_tensors
        grad_w = (x.t() @ grad).t().contiguous() if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return None, grad_w, grad_b


def _linear(lin: nn.Linear, x: torch.Tensor, first: bool) -> torch.Tensor:
    if (first and not x.requires_grad and x.dim() == 2 and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu") and torch.is_grad_enabled()):
        return _InputLinear.apply(x, lin.weight, lin.bias)
    return lin(x)


class Policy(nn.Module, ABC):
    """Base class: an MLP trunk with explicit-generator dropout and a parameter head.

    Subclasses define ``param_dim``, :meth:`log_prob_from_params`, :meth:`mean_from_params` and
    :meth:`kl_from_params`. Inputs are *normalised* observations; the :class:`presa.checkpoint.Actor`
    wraps normalisation for raw observations.
    """

    kind: ClassVar[str] = ""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256),
                 dropout: float = 0.25, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden, self.p_drop = tuple(int(h) for h in hidden), float(dropout)
        sizes = (self.obs_dim, *self.hidden)
        self.layers = nn.ModuleList(nn.Linear(i, o, device="meta")
                                    for i, o in zip(sizes[:-1], sizes[1:], strict=True))
        self.head = nn.Linear(sizes[-1], self.param_dim, device="meta")
        self.to_empty(device="cpu")
        self.reset_parameters(generator)

    @property
    @abstractmethod
    def param_dim(self) -> int:
        """Width of the head's output (distribution parameters per row)."""

    def init_kwargs(self) -> dict:
        """Constructor arguments needed to rebuild this policy (saved in checkpoints)."""
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden": list(self.hidden),
                "dropout": self.p_drop}

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """PyTorch's default Linear ranges, U(−1/√fan_in, 1/√fan_in), drawn from ``generator``."""
        for lin in [*self.layers, self.head]:
            bound = 1.0 / math.sqrt(lin.in_features)
            lin.weight.uniform_(-bound, bound, generator=generator)
            lin.bias.uniform_(-bound, bound, generator=generator)

    def params(self, obs: torch.Tensor, generator: torch.Generator | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
        """Distribution parameters for normalised observations ``obs`` (B, obs) → (B, param_dim), fp32.

        In training mode, dropout masks come from ``generator``. ``dtype`` (e.g. ``torch.bfloat16``,
        :mod:`presa.precision`) is the precision the layers compute in: inputs, weights and
        activations are rounded to it, each matmul accumulates in fp32, and the output comes back
        as fp32; gradients reach the fp32 weights. (Keeping the input layer and the head in fp32
        halved the output's rounding error but cost 40 % more time per step, for the conversions
        of the 256-wide activations in and out of bf16.)
        """
        low = dtype is not None and dtype != self.head.weight.dtype
        x = obs.to(dtype) if low else obs
        drop = self.training and self.p_drop > 0.0
        for i, lin in enumerate(cast("Iterable[nn.Linear]", self.layers)):  # (ModuleList yields Module)
            if low:
                x = nn.functional.linear(x, lin.weight.to(dtype), lin.bias.to(dtype))
            else:
                x = _linear(lin, x, i == 0)
            x = torch.relu(x)
            if drop:
                x = dropout(x, self.p_drop, generator)
        if low:
            return nn.functional.linear(x, self.head.weight.to(dtype), self.head.bias.to(dtype)).float()
        return self.head(x)

    @abstractmethod
    def log_prob_from_params(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log π(a|s) per row, (B,)."""

    @abstractmethod
    def mean_from_params(self, params: torch.Tensor) -> torch.Tensor:
        """The mean (evaluation) action per row, (B, act)."""

    @abstractmethod
    def kl_from_params(self, params: torch.Tensor, ref_params: torch.Tensor) -> torch.Tensor:
        """KL(π_θ(·|s) ‖ π_ref(·|s)) per row, (B,)."""

    @abstractmethod
    def score_log_prob(self, params: torch.Tensor, actions: torch.Tensor, ref_params: torch.Tensor,
                       action_var: torch.Tensor) -> torch.Tensor:
        """log π(a|s) in nats (up to a constant shared with π_ref) as the alignment scores use it, (B,).

        The spread of the distribution is the reference's, frozen: ``action_var`` (per action
        dimension, the reference's residual variance) for the deterministic policy, the
        reference's log-std (from ``ref_params``) for the Gaussian one. Only the mean moves, so
        a score cannot be raised by changing the variance.
        """

    @abstractmethod
    def score_log_prob_bounds(self, ref_params: torch.Tensor, actions: torch.Tensor,
                              action_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(max, min) over mean actions of :meth:`score_log_prob` per row, each (B,): the largest
        value (the mean on the action) and the smallest (the mean as far from the action as the
        action space allows; −inf where unbounded)."""

    @abstractmethod
    def score_kl(self, params: torch.Tensor, ref_params: torch.Tensor,
                 action_var: torch.Tensor) -> torch.Tensor:
        """KL(π_θ ‖ π_ref) per row, (B,), of the distributions :meth:`score_log_prob` uses."""

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        return self.log_prob_from_params(self.params(obs, generator), actions)

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean_from_params(self.params(obs))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean_action(obs)


@register_policy("deterministic")
class DeterministicPolicy(Policy):
    """μ_θ(s) = tanh(MLP(s)); log π(a|s) = −‖μ_θ(s) − a‖²."""

    @property
    def param_dim(self) -> int:
        return self.act_dim

    def log_prob_from_params(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return -(torch.tanh(params) - actions).square().sum(-1)

    def mean_from_params(self, params: torch.Tensor) -> torch.Tensor:
        return torch.tanh(params)

    def kl_from_params(self, params: torch.Tensor, ref_params: torch.Tensor) -> torch.Tensor:
        # Both are N(μ, ½I) (log-density −‖μ − a‖² + const): KL = ‖μ_θ − μ_ref‖² / (2·½).
        return (torch.tanh(params) - torch.tanh(ref_params)).square().sum(-1)

    def score_log_prob(self, params: torch.Tensor, actions: torch.Tensor, ref_params: torch.Tensor,
                       action_var: torch.Tensor) -> torch.Tensor:
        return -((torch.tanh(params) - actions).square() / (2.0 * action_var)).sum(-1)

    def score_log_prob_bounds(self, ref_params: torch.Tensor, actions: torch.Tensor,
                              action_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the mean lies in [-1, 1]: farthest from a is the opposite end, at distance 1 + |a|
        far = (1.0 + actions.abs()).square()
        return torch.zeros(actions.shape[0], device=actions.device), -(far / (2.0 * action_var)).sum(-1)

    def score_kl(self, params: torch.Tensor, ref_params: torch.Tensor,
                 action_var: torch.Tensor) -> torch.Tensor:
        return ((torch.tanh(params) - torch.tanh(ref_params)).square() / (2.0 * action_var)).sum(-1)


@register_policy("gaussian")
class GaussianPolicy(Policy):
    """a = tanh(u), u ~ N(m_θ(s), diag σ_θ(s)²), log σ clamped to [−5, 2]."""

    @property
    def param_dim(self) -> int:
        return 2 * self.act_dim

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = params.split(self.act_dim, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def log_prob_from_params(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = self._split(params)
        a = actions.clamp(-1.0 + _ATANH_EPS, 1.0 - _ATANH_EPS)
        u = torch.atanh(a)
        z = (u - mean) * torch.exp(-log_std)
        log_n = -0.5 * z.square() - log_std - 0.5 * math.log(2.0 * math.pi)
        # change of variables a = tanh(u): log|da/du| = log(1 − tanh(u)²) = 2(log 2 − u − softplus(−2u))
        log_det = 2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))
        return (log_n - log_det).sum(-1)

    def mean_from_params(self, params: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self._split(params)[0])

    def kl_from_params(self, params: torch.Tensor, ref_params: torch.Tensor) -> torch.Tensor:
        # KL is invariant under the bijection tanh, so it is the KL of the two diagonal Gaussians.
        m1, s1 = self._split(params)
        m2, s2 = self._split(ref_params)
        var_ratio = torch.exp(2.0 * (s1 - s2))
        return (s2 - s1 + 0.5 * (var_ratio + (m1 - m2).square() * torch.exp(-2.0 * s2)) - 0.5).sum(-1)

    def score_log_prob(self, params: torch.Tensor, actions: torch.Tensor, ref_params: torch.Tensor,
                       action_var: torch.Tensor) -> torch.Tensor:
        mean, _ = self._split(params)
        _, ref_log_std = self._split(ref_params)
        return self.log_prob_from_params(torch.cat([mean, ref_log_std.detach()], dim=-1), actions)

    def score_log_prob_bounds(self, ref_params: torch.Tensor, actions: torch.Tensor,
                              action_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, ref_log_std = self._split(ref_params)
        u = torch.atanh(actions.clamp(-1.0 + _ATANH_EPS, 1.0 - _ATANH_EPS))
        best = self.log_prob_from_params(torch.cat([u, ref_log_std], dim=-1), actions)
        return best, torch.full_like(best, -math.inf)  # the pre-tanh mean is unbounded

    def score_kl(self, params: torch.Tensor, ref_params: torch.Tensor,
                 action_var: torch.Tensor) -> torch.Tensor:
        mean, _ = self._split(params)
        ref_mean, ref_log_std = self._split(ref_params)
        return ((mean - ref_mean).square() * torch.exp(-2.0 * ref_log_std)).sum(-1) / 2.0


def build_policy(kind: str, *, obs_dim: int, act_dim: int, hidden: tuple[int, ...] | list[int] = (256, 256),
                 dropout: float = 0.25, generator: torch.Generator | None = None) -> Policy:
    """Build a registered policy class by name.

    Raises:
        FeedbackgenError: unknown policy kind.
    """
    if kind not in POLICY_CLASSES:
        raise FeedbackgenError(f"unknown policy {kind!r}; choose one of {', '.join(sorted(POLICY_CLASSES))}")
    return POLICY_CLASSES[kind](obs_dim, act_dim, tuple(hidden), dropout, generator)
