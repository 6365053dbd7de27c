"""CPL: preference alignment only (no safety term) — what PreSa would be without safety labels.

Phase 1 is the same behaviour cloning as PreSa (``bc_steps``, then the frozen reference π_ref);
phase 2 minimises the CPL-style preference loss L_pref (``lambda_cb``, ``alpha``, ``gamma``)
alone, with the same warm-up and batch of ``pair_batch`` pairs. ν, z_ref, δ and η are not among its
settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from presa import losses
from presa.algos.base import ReferenceAlignment, register
from presa.config import AlignmentConfig, TrainConfig


@dataclass(frozen=True)
class CPLConfig(AlignmentConfig):
    """CPL's settings: those of the reference alignment and these (each documented in
    :class:`presa.config.TrainConfig`)."""

    algo: str = "cpl"
    lambda_cb: float = TrainConfig.lambda_cb
    pair_batch: int = TrainConfig.pair_batch


@register("cpl")
class CPL(ReferenceAlignment[CPLConfig]):
    """Contrastive preference learning against the BC reference."""

    needs_preferences = True

    def align_update(self, step: int) -> dict[str, torch.Tensor | float]:
        cfg, d = self.cfg, self.data
        p = d.sample(self.gen, d.n_pairs, cfg.pair_batch)
        y = d.pref_label[p]
        scores, _ = self.segment_scores(torch.cat([d.pref_a[p], d.pref_b[p]]))
        s_a, s_b = scores[:cfg.pair_batch], scores[cfg.pair_batch:]
        loss = losses.preference_loss(s_a, s_b, y, cfg.lambda_cb)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), "pref_loss": loss.detach(),
                "pref_acc": losses.preference_accuracy(s_a.detach(), s_b.detach(), y)}
