"""Binary alignment: one merged binary label per segment, desirable = safe AND preferred, trained
with the KTO-style loss and no constraint.

Merged labels (computed once from the store at the run's threshold, see
:func:`presa.baseline_losses.merged_binary_labels`): a segment is **desirable** if it won more of
its decided preference pairs than it lost *and* is labelled safe; **undesirable** if it is labelled
unsafe *or* lost more pairs than it won; otherwise (a tie, a safe segment in no pair, a winner
without a safety label) it is left out. With the default store layout (each segment in one pair,
safety segments drawn from the pair segments) this is: the winner of a pair is desirable when it is
also safe, the loser is undesirable, every unsafe segment is undesirable.

Phase 1 is PreSa's behaviour cloning (``bc_steps``, then the frozen reference π_ref). Phase 2 draws
``2·pair_batch + safety_batch`` labelled segments per step (as many as a PreSa step scores) and
minimises ``1 − g`` with g the weighted KTO value of PreSa's safety term (``beta_s``; undesirable
weight ``eta``·N_desirable/N_undesirable; reference point ``zref_mode``). ν and δ are not among its
settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from feedbackgen.errors import FeedbackgenError
from presa import baseline_losses, losses
from presa.algos.base import ReferenceAlignment, register
from presa.config import AlignmentConfig, TrainConfig
from presa.data import TrainingData


def binary_labels(data: TrainingData) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment ids, 1 desirable / 0 undesirable) of ``data`` at its threshold."""
    return baseline_losses.merged_binary_labels(data.n_segments, data.pref_a, data.pref_b, data.pref_label,
                                                data.safety_segment, data.safety_label)


@dataclass(frozen=True)
class BinaryAlignmentConfig(AlignmentConfig):
    """Binary alignment's settings: those of the reference alignment and these (each documented in
    :class:`presa.config.TrainConfig`)."""

    algo: str = "binary"
    eta: float = TrainConfig.eta
    beta_s: float = TrainConfig.beta_s
    zref_mode: str = TrainConfig.zref_mode
    zref_momentum: float = TrainConfig.zref_momentum
    zref_clamp: bool = TrainConfig.zref_clamp
    pair_batch: int = TrainConfig.pair_batch
    safety_batch: int = TrainConfig.safety_batch


@register("binary")
class BinaryAlignment(ReferenceAlignment[BinaryAlignmentConfig]):
    """KTO-style alignment on merged desirable/undesirable labels; state beyond the networks: z_ref."""

    needs_preferences = True
    needs_safety = True

    def __init__(self, cfg: BinaryAlignmentConfig, data: TrainingData, generator: torch.Generator) -> None:
        super().__init__(cfg, data, generator)
        self.segments, self.labels = binary_labels(data)
        self.zref = torch.tensor(0.0, dtype=torch.float32, device=self.device)

    @classmethod
    def check_data(cls, data: TrainingData, cfg: BinaryAlignmentConfig) -> None:
        super().check_data(data, cfg)
        _, labels = binary_labels(data)
        if labels.numel() == 0 or not bool((labels > 0.5).any()):
            raise FeedbackgenError(f"binary: no segment is both preferred and labelled safe at threshold "
                                   f"{data.threshold:g}; choose a larger --threshold or a store whose safety "
                                   "segments are the pair segments")

    def align_update(self, step: int) -> dict[str, torch.Tensor | float]:
        cfg = self.cfg
        n = 2 * cfg.pair_batch + cfg.safety_batch
        i = self.data.sample(self.gen, int(self.segments.shape[0]), n)
        good = self.labels[i]
        scores, kl = self.segment_scores(self.segments[i], with_kl=cfg.zref_mode == "kl")
        zref = losses.zref_update(cfg.zref_mode, self.zref, scores, cfg.zref_momentum,
                                  kl.mean() if kl is not None else None, clamp=cfg.zref_clamp)
        loss = baseline_losses.kto_loss(scores, good, zref, cfg.beta_s, cfg.eta)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.zref = zref
        with torch.no_grad():
            n_good = good.sum()
            s_det = scores.detach()
            return {"loss": loss.detach(), "zref": zref, "desirable_frac": n_good / good.numel(),
                    "score_desirable": (s_det * good).sum() / n_good.clamp(min=1),
                    "score_undesirable": (s_det * (1 - good)).sum() / (good.numel() - n_good).clamp(min=1)}

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["zref"] = self.zref.clone()
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        super().load_state_dict(sd)
        self.zref = sd["zref"].to(self.device)
