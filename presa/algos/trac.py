"""TraC-style reference (oracle): trajectory classification, the PreSa authors' earlier method
(Gong et al., "Offline Safe Reinforcement Learning Using Trajectory Classification", AAAI 2025).

Like ``bc_safe`` it reads the ground truth from the store's ``oracle`` group, not the feedback, so
it is a reference for what the same scores can reach with exact labels, not a method that learns
from feedback. The segments are those the training feedback refers to (pairs and safety rows; the
validation split's segments are left out). With the oracle's segment cost and return at the run's
threshold (the store's safety rule):

- **desirable** (1): safe segments whose return is in the top ``trac_top_fraction`` of the safe
  segments (TraC's ``safe_top_perc``, 0.5);
- **undesirable** (0): every unsafe segment;
- the other safe segments are left out (TraC's ``safe_bottom_perc`` = 0).

Phase 1 is PreSa's behaviour cloning (``bc_steps``, then the frozen reference π_ref); phase 2 draws
``2·pair_batch + safety_batch`` labelled segments per step and minimises TraC's weighted
classification loss on the same implicit scores S_θ as PreSa (calibrated log-likelihood ratios)::

    L = −mean[ w · ( y·log σ(S_θ) + (1 − y)·log σ(−S_θ) ) ],   w = 1 desirable, η·N_d/N_u undesirable

with TraC's η = 0.25 (:data:`TRAC_ETA`)

with no multiplier and no constraint. TraC's reward-rank segment weights are not reproduced (every
labelled segment has weight 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from feedbackgen.errors import FeedbackgenError
from presa.algos.base import ReferenceAlignment, register
from presa.config import AlignmentConfig, TrainConfig
from presa.data import TrainingData
from presa.heldout import segment_safe_oracle
from presa.losses import safety_weights

TOP_FRACTION = 0.5
#: TraC's weight ratio η of undesirable to desirable segments (its Bullet-Safety-Gym setting); the
#: run's ``eta`` (PreSa's, class-balanced) is not used, so the reference stays the authors' method.
TRAC_ETA = 0.25


def trac_labels(data: TrainingData, top_fraction: float = TOP_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment ids, 1 desirable / 0 undesirable) from the oracle at ``data``'s threshold.

    Raises:
        FeedbackgenError: the store has no oracle group (it was stripped).
    """
    oracle = data.store.oracle
    safe = segment_safe_oracle(data.store, data.threshold_index)
    if oracle is None or safe is None:
        raise FeedbackgenError(f"trac needs the ground-truth segment costs and returns, but the store "
                               f"{data.store_path} has no oracle group (it was stripped); train on the "
                               "unstripped store")
    used = torch.unique(torch.cat([data.pref_a, data.pref_b, data.safety_segment])).cpu().numpy()
    ret = np.asarray(oracle.segment_return, dtype=np.float64)[used]
    is_safe = safe[used]
    safe_ret = ret[is_safe]
    labels = np.full(used.shape, -1, dtype=np.int64)
    labels[~is_safe] = 0
    if safe_ret.size:
        cut = np.quantile(safe_ret, 1.0 - top_fraction)
        labels[is_safe & (ret >= cut)] = 1
    keep = labels >= 0
    return (torch.as_tensor(used[keep], device=data.device),
            torch.as_tensor(labels[keep], dtype=torch.float32, device=data.device))


def trac_loss(scores: torch.Tensor, desirable: torch.Tensor, eta: float) -> torch.Tensor:
    """TraC's weighted classification loss of ``scores`` (desirable: 1/0), mean over the batch."""
    w = safety_weights(desirable, eta)
    return -(w * (desirable * F.logsigmoid(scores) + (1 - desirable) * F.logsigmoid(-scores))).mean()


@dataclass(frozen=True)
class TraCConfig(AlignmentConfig):
    """TraC's settings: those of the reference alignment and these (each documented in
    :class:`presa.config.TrainConfig`)."""

    algo: str = "trac"
    pair_batch: int = TrainConfig.pair_batch
    safety_batch: int = TrainConfig.safety_batch


@register("trac")
class TraC(ReferenceAlignment[TraCConfig]):
    """Trajectory classification against the BC reference (oracle labels)."""

    def __init__(self, cfg: TraCConfig, data: TrainingData, generator: torch.Generator) -> None:
        super().__init__(cfg, data, generator)
        self.segments, self.labels = trac_labels(data)

    @classmethod
    def check_data(cls, data: TrainingData, cfg: TraCConfig) -> None:
        super().check_data(data, cfg)
        _, labels = trac_labels(data)
        n_good = int((labels > 0.5).sum())
        if n_good == 0 or n_good == labels.numel():
            kind = "desirable (safe)" if n_good == 0 else "undesirable (unsafe)"
            raise FeedbackgenError(f"trac: no {kind} segment at threshold {data.threshold:g} among the "
                                   f"{labels.numel()} labelled segments; choose another --threshold")

    def align_update(self, step: int) -> dict[str, torch.Tensor | float]:
        cfg = self.cfg
        n = 2 * cfg.pair_batch + cfg.safety_batch
        i = self.data.sample(self.gen, int(self.segments.shape[0]), n)
        good = self.labels[i]
        scores, _ = self.segment_scores(self.segments[i])
        loss = trac_loss(scores, good, TRAC_ETA)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            s_det = scores.detach()
            n_good = good.sum()
            return {"loss": loss.detach(), "desirable_frac": n_good / good.numel(),
                    "acc": ((s_det > 0).float() == good).float().mean(),
                    "score_desirable": (s_det * good).sum() / n_good.clamp(min=1),
                    "score_undesirable": (s_det * (1 - good)).sum() / (good.numel() - n_good).clamp(min=1)}
