"""The losses and dual updates of PreSa, as small pure functions on tensors.

Label conventions (everywhere in the toolkit):

- preference label ``y = P(b ≻ a)``: 1 means segment b is preferred, 0 means a is, ½ a tie;
- safety label ``u``: 1 safe, 0 unsafe.

None of these functions synchronises with the device (no ``.item()``), so a training step can run
without host round trips. See ``docs/method.md`` for the method.

Example:
    >>> import torch
    >>> s_a, s_b = torch.tensor([0.0]), torch.tensor([2.0])
    >>> round(float(preference_loss(s_a, s_b, torch.tensor([1.0]), 1.0)), 4)  # softplus(-2)
    0.1269
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segment_scores(logp: torch.Tensor, ref_logp: torch.Tensor, weights: torch.Tensor,
                   alpha: float) -> torch.Tensor:
    """Implicit segment score S_θ(σ) = α · Σ_t γ^t · [log π_θ(a_t|s_t) − log π_ref(a_t|s_t)].

    Args:
        logp: log π_θ per step, (B, H).
        ref_logp: log π_ref per step, (B, H) (cached, no gradient).
        weights: γ^t per step, 0 on padding beyond a segment's length, (B, H).
        alpha: temperature α > 0.

    Returns:
        (B,) scores.
    """
    return alpha * ((logp - ref_logp) * weights).sum(-1)


def preference_loss(score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor,
                    lambda_cb: float = 1.0, count_a: torch.Tensor | None = None,
                    count_b: torch.Tensor | None = None) -> torch.Tensor:
    """CPL-style preference loss with conservative bias, label y = P(b ≻ a)::

        L = mean[ y · softplus(−(S_b − λ_cb·S_a)) + (1 − y) · softplus(−(S_a − λ_cb·S_b)) ]

    With λ_cb = 1 this is the Bradley–Terry cross-entropy of sigmoid(S_b − S_a) against y.

    Args:
        score_a, score_b: S_θ of the first and second segment of each pair, (P,).
        label: y = P(b ≻ a) ∈ [0, 1], (P,).
        lambda_cb: conservative bias λ_cb ∈ (0, 1].
        count_a, count_b: optional 0/1 weights, (P,): whether a preference *for* a (resp. b) counts.
            With them the loss is the weighted sum over the counted terms divided by their total
            weight (0 when nothing counts).
    """
    lose_a = F.softplus(-(score_b - lambda_cb * score_a))
    lose_b = F.softplus(-(score_a - lambda_cb * score_b))
    if count_a is None and count_b is None:
        return (label * lose_a + (1.0 - label) * lose_b).mean()
    w_b = label * (count_b if count_b is not None else 1.0)
    w_a = (1.0 - label) * (count_a if count_a is not None else 1.0)
    return (w_b * lose_a + w_a * lose_b).sum() / (w_a + w_b).sum().clamp(min=1e-8)


def preference_accuracy(score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Fraction of non-tied pairs (y ≠ ½) whose score order agrees with y = P(b ≻ a) (0 if all tie)."""
    decided = label != 0.5
    agree = ((score_b > score_a) == (label > 0.5)) & decided
    return agree.sum() / decided.sum().clamp(min=1)


def safety_values(scores: torch.Tensor, safe: torch.Tensor, zref: torch.Tensor | float,
                  beta_s: float, beta_safe: float | None = None) -> torch.Tensor:
    """KTO/HALO-style value of each safety-labelled segment (u = 1 safe, 0 unsafe)::

        v = sigmoid(β_s · (S_θ − z_ref))  if u = 1
        v = sigmoid(β_s · (z_ref − S_θ))  if u = 0

    Args:
        scores: S_θ, (M,).
        safe: u ∈ {0, 1} as floats, (M,).
        zref: reference point z_ref (treated as a constant).
        beta_s: slope β_s > 0.
    """
    sign = 2.0 * safe - 1.0
    if beta_safe is not None:  # a different slope for segments labelled safe
        sign = sign * (safe * beta_safe + (1.0 - safe) * beta_s)
        return torch.sigmoid(sign * (scores - zref))
    return torch.sigmoid(beta_s * sign * (scores - zref))


def safety_weights(safe: torch.Tensor, eta: float) -> torch.Tensor:
    """Per-segment weights: 1 for safe, η · N_safe / N_unsafe for unsafe (batch counts).

    Counts are clamped at 1, so a batch without safe (or without unsafe) segments still gives
    positive weights and a defined weighted mean (all weights equal: g_θ is the plain mean).
    """
    n_safe = safe.sum()
    n_unsafe = safe.numel() - n_safe
    w_unsafe = eta * n_safe.clamp(min=1.0) / n_unsafe.clamp(min=1.0)
    return safe + (1.0 - safe) * w_unsafe


def safety_alignment(scores: torch.Tensor, safe: torch.Tensor, zref: torch.Tensor | float,
                     beta_s: float, eta: float, beta_safe: float | None = None) -> torch.Tensor:
    """g_θ = Σ w·v / Σ w over the batch of safety segments (see :func:`safety_values`,
    :func:`safety_weights`); g_θ ∈ (0, 1), and the constraint is g_θ ≥ δ."""
    w = safety_weights(safe, eta)
    v = safety_values(scores, safe, zref, beta_s, beta_safe)
    return (w * v).sum() / w.sum()


def lagrangian(pref_loss: torch.Tensor, g: torch.Tensor, nu: torch.Tensor | float,
               delta: float) -> torch.Tensor:
    """L(θ, ν) = L_pref(θ) + ν · (δ − g_θ), with ν treated as a constant for the θ step."""
    return pref_loss + nu * (delta - g)


def dual_update_sgd(nu: torch.Tensor, g: torch.Tensor, delta: float, lr: float,
                    nu_max: float) -> torch.Tensor:
    """Projected dual ascent: ν ← clip(ν + lr_ν · (δ − g_θ), 0, ν_max), with g_θ detached.

    ν rises while the constraint is violated (g_θ < δ) and falls towards 0 once it holds.
    """
    return (nu + lr * (delta - g.detach())).clamp(0.0, nu_max)


def dual_update_pid(integral: torch.Tensor, prev_error: torch.Tensor | None, g: torch.Tensor, delta: float,
                    ki: float, kp: float, kd: float, nu_max: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PID Lagrangian (Stooke et al., 2020) on the violation e = δ − g_θ::

        I ← clip(I + k_i · e, 0, ν_max)
        ν = clip(I + k_p · e + k_d · (e − e_prev), 0, ν_max)     (no derivative on the first call)

    With k_p = k_d = 0 and k_i = lr_ν this is exactly :func:`dual_update_sgd` (start with I = ν_0).

    Returns:
        (ν, new integral I, error e) — pass ``e`` back as ``prev_error`` next step.
    """
    error = delta - g.detach()
    integral = (integral + ki * error).clamp(0.0, nu_max)
    nu = integral + kp * error
    if prev_error is not None and kd != 0.0:
        nu = nu + kd * (error - prev_error)
    return nu.clamp(0.0, nu_max), integral, error


def zref_update(mode: str, zref: torch.Tensor, scores: torch.Tensor, momentum: float,
                kl: torch.Tensor | None = None, clamp: bool = True) -> torch.Tensor:
    """The reference point z_ref for this step (detached).

    - ``ema``:   z ← max(0, m · z + (1 − m) · mean(S_θ)) over the safety batch;
    - ``batch``: z = max(0, mean(S_θ));
    - ``kl``:    z = ``kl`` — a detached batch estimate of α·Σ_t γ^t·KL(π_θ‖π_ref) (≥ 0);
    - ``zero``:  z = 0.

    ``clamp=False`` drops the ``max(0, ·)`` of ``ema`` and ``batch`` (method.md clamps): with a
    deterministic policy a safe segment's score is bounded above by α·Σγ^t‖μ_ref − a‖², so with
    z_ref ≥ 0 the constraint g_θ ≥ δ can be out of reach (results/study-v2/README.md).
    """
    mean = scores.detach().mean()
    floor = 0.0 if clamp else float("-inf")
    if mode == "ema":
        return (momentum * zref + (1.0 - momentum) * mean).clamp(min=floor)
    if mode == "batch":
        return mean.clamp(min=floor)
    if mode == "kl":
        if kl is None:
            raise ValueError("zref mode 'kl' needs the batch KL estimate")
        return kl.detach().clamp(min=0.0)
    if mode == "zero":
        return torch.zeros_like(zref)
    raise ValueError(f"unknown zref mode {mode!r}")


def bc_loss(logp: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning: −mean log π_θ(a|s) (for the deterministic policy, the mean ‖μ − a‖²)."""
    return -logp.mean()
