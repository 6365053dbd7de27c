"""Losses, labels and targets of the baselines, as small pure functions on tensors.

Conventions as in :mod:`presa.losses`: preference label ``y = P(b ≻ a)``; safety label ``u`` 1 safe,
0 unsafe. Nothing here synchronises with the device except :func:`merged_binary_labels`, which runs
once when an algorithm is built.

Example:
    >>> import torch
    >>> pred_a, pred_b = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    >>> mask = torch.ones(1, 2)
    >>> round(float(reward_model_loss(pred_a, pred_b, mask, torch.tensor([1.0]))), 4)  # softplus(-2)
    0.1269
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from presa import losses

# -- binary alignment ------------------------------------------------------------------------------


def merged_binary_labels(n_segments: int, pref_a: torch.Tensor, pref_b: torch.Tensor,
                         pref_label: torch.Tensor, safety_segment: torch.Tensor, safety_label: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One binary label per segment: desirable = safe AND preferred (binary alignment baseline).

    The rule, per segment σ:

    - *preferred* / *dispreferred*: over the decided pairs that contain σ (y ≠ ½; with soft labels
      the side with probability > ½ wins), σ is preferred if it won more pairs than it lost,
      dispreferred if it lost more than it won, undetermined otherwise (only ties, an equal
      number of wins and losses, or in no pair).
    - *safe* / *unsafe*: its safety label at the run's threshold (unknown if it has none; a
      segment labelled more than once is unsafe if any label says unsafe).
    - **desirable (1)** iff preferred and safe; **undesirable (0)** iff unsafe or dispreferred;
      every other segment (safe but undetermined, preferred without a safety label, ...) gets no
      label, because one of the two facts that define "desirable" is missing.

    So the winner of a pair is desirable when it is also labelled safe, the loser of a pair is
    undesirable whatever its safety, and an unsafe segment is undesirable whatever its preference.

    Args:
        n_segments: number of segments S in the store.
        pref_a, pref_b: segment ids of each pair, (P,).
        pref_label: y = P(b ≻ a), (P,).
        safety_segment: labelled segment ids, (M,).
        safety_label: 1 safe / 0 unsafe, (M,).

    Returns:
        ``(segments, labels)``: the labelled segment ids (sorted) and their labels (float, 1/0).
    """
    dev = pref_a.device
    wins = torch.zeros(n_segments, dtype=torch.int64, device=dev)
    decided = pref_label != 0.5
    b_wins = (pref_label > 0.5) & decided
    a_wins = (pref_label < 0.5) & decided
    ones = torch.ones_like(pref_a)
    wins.index_add_(0, pref_b, torch.where(b_wins, ones, 0) - torch.where(a_wins, ones, 0))
    wins.index_add_(0, pref_a, torch.where(a_wins, ones, 0) - torch.where(b_wins, ones, 0))
    preferred, dispreferred = wins > 0, wins < 0
    n_labels = torch.zeros(n_segments, dtype=torch.int64, device=dev)
    n_unsafe = torch.zeros(n_segments, dtype=torch.int64, device=dev)
    n_labels.index_add_(0, safety_segment, torch.ones_like(safety_segment))
    n_unsafe.index_add_(0, safety_segment, (safety_label < 0.5).long())
    unsafe = n_unsafe > 0
    safe = (n_labels > 0) & ~unsafe
    desirable = preferred & safe
    undesirable = unsafe | dispreferred
    labelled = desirable | undesirable
    segments = torch.nonzero(labelled).flatten()
    return segments, desirable[segments].float()


def kto_loss(scores: torch.Tensor, desirable: torch.Tensor, zref: torch.Tensor | float, beta: float,
             eta: float) -> torch.Tensor:
    """KTO-style binary loss ``1 − g`` with g the weighted value of :func:`presa.losses.safety_alignment`
    (desirable segments pushed above z_ref, undesirable ones below; undesirable weight η·N_d/N_u)."""
    return 1.0 - losses.safety_alignment(scores, desirable, zref, beta, eta)


# -- two-stage: reward and cost models --------------------------------------------------------------


def segment_sums(per_step: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Undiscounted sum over the real steps of each segment: (K, H) values, (K, H) 0/1 mask → (K,)."""
    return (per_step * mask).sum(-1)


def reward_model_loss(pred_a: torch.Tensor, pred_b: torch.Tensor, mask: torch.Tensor, label: torch.Tensor,
                      mask_b: torch.Tensor | None = None) -> torch.Tensor:
    """Bradley–Terry loss of a per-step reward model: P(b ≻ a) = sigmoid(R̂(b) − R̂(a)) with
    R̂(σ) the undiscounted sum of predicted per-step rewards; cross-entropy against y.

    Args:
        pred_a, pred_b: predicted per-step rewards of the pairs' segments, (P, H).
        mask: 1 on the real steps of segment a (and of b, unless ``mask_b`` is given), (P, H).
        label: y = P(b ≻ a), (P,).
        mask_b: the real steps of segment b when they differ from a's.
    """
    r_a = segment_sums(pred_a, mask)
    r_b = segment_sums(pred_b, mask if mask_b is None else mask_b)
    return losses.preference_loss(r_a, r_b, label, 1.0)


def cost_logits(pred_cost: torch.Tensor, mask: torch.Tensor, kappa_seg: float, margin: float,
                temperature: float) -> torch.Tensor:
    """Logit of P(safe) for a per-step cost model: ``(κ_seg + margin − Ĉ(σ)) / temperature`` with
    Ĉ(σ) the undiscounted sum of predicted per-step costs over the real steps; (K, H) → (K,)."""
    return (kappa_seg + margin - segment_sums(pred_cost, mask)) / temperature


def cost_model_loss(pred_cost: torch.Tensor, mask: torch.Tensor, safe: torch.Tensor, kappa_seg: float,
                    margin: float, temperature: float) -> torch.Tensor:
    """Binary cross-entropy of the safety labels (1 safe) against :func:`cost_logits`."""
    logits = cost_logits(pred_cost, mask, kappa_seg, margin, temperature)
    return F.binary_cross_entropy_with_logits(logits, safe)


# -- two-stage: Lagrangian TD3+BC --------------------------------------------------------------------


def discounted_cost_threshold(kappa: float, max_episode_steps: int, gamma: float) -> float:
    """The cost critic's budget for an episode threshold κ (the OSRL convention): the episode
    budget spread evenly over T_max steps, discounted, ``κ/T_max · Σ_{t<T_max} γ^t``."""
    if gamma >= 1.0:
        return float(kappa)
    return float(kappa) / max_episode_steps * (1.0 - gamma ** max_episode_steps) / (1.0 - gamma)


def td_target(reward: torch.Tensor, done: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """One-step TD target ``r + γ·(1 − done)·Q'(s', a')`` (no gradient)."""
    return (reward + gamma * (1.0 - done) * next_q).detach()


def lagrangian_td3bc_actor_loss(q_r: torch.Tensor, q_c: torch.Tensor, nu: torch.Tensor | float,
                                bc: torch.Tensor, alpha: float) -> torch.Tensor:
    """Actor loss of Lagrangian TD3+BC: ``−λ·mean(Q_r − ν·Q_c) + mean(bc)`` with the TD3+BC
    normaliser ``λ = α / mean|Q_r − ν·Q_c|`` (detached), so the RL term and the behaviour-cloning
    term ``bc`` (per-row −log π(a|s)) stay on comparable scales whatever the reward scale."""
    q = q_r - nu * q_c
    lam = alpha / q.abs().mean().detach().clamp(min=1e-6)
    return -lam * q.mean() + bc.mean()


def lagrangian_dual_update(nu: torch.Tensor, q_c: torch.Tensor, budget: float, lr: float,
                           nu_max: float) -> torch.Tensor:
    """ν ← clip(ν + lr·(mean Q_c − budget), 0, ν_max): ν rises while the estimated discounted cost
    of the policy's actions exceeds the budget (Q_c detached)."""
    return (nu + lr * (q_c.detach().mean() - budget)).clamp(0.0, nu_max)
