"""Safety-only: PreSa's safety term alone, with a fixed weight — what PreSa would be without
preferences.

Phase 1 is the same behaviour cloning as PreSa (``bc_steps``, then the frozen reference π_ref).
Phase 2 minimises ``ν₀ · (1 − g_θ)`` on a batch of ``safety_batch`` safety-labelled segments, with
g_θ PreSa's weighted KTO-style safety value (``beta_s``, ``eta``) and z_ref PreSa's reference point
(``zref_mode``, ``zref_momentum``). The weight is fixed at ``nu_init`` (no dual update, ``nu_lr`` and
``nu_rule`` are unused) and must be > 0. With Adam the weight scales the only loss term, so it
barely changes the steps. δ is unused. The preference pairs are not used. Those options, ``nu_lr``,
``nu_rule`` and ``nu_max`` are not among its settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from feedbackgen.errors import FeedbackgenError
from presa import losses
from presa.algos.base import ReferenceAlignment, register
from presa.algos.presa import require_both_safety_classes
from presa.config import AlignmentConfig, TrainConfig
from presa.data import TrainingData


@dataclass(frozen=True)
class SafetyOnlyConfig(AlignmentConfig):
    """Safety-only's settings: those of the reference alignment and these (each documented in
    :class:`presa.config.TrainConfig`)."""

    algo: str = "safety_only"
    eta: float = TrainConfig.eta
    beta_s: float = TrainConfig.beta_s
    zref_mode: str = TrainConfig.zref_mode
    zref_momentum: float = TrainConfig.zref_momentum
    zref_clamp: bool = TrainConfig.zref_clamp
    nu_init: float = TrainConfig.nu_init
    safety_batch: int = TrainConfig.safety_batch


@register("safety_only")
class SafetyOnly(ReferenceAlignment[SafetyOnlyConfig]):
    """KTO-style safety alignment with a fixed weight ν₀; state beyond the networks: z_ref."""

    needs_safety = True

    def __init__(self, cfg: SafetyOnlyConfig, data: TrainingData, generator: torch.Generator) -> None:
        super().__init__(cfg, data, generator)
        self.nu = torch.tensor(cfg.nu_init, dtype=torch.float32, device=self.device)
        self.zref = torch.tensor(0.0, dtype=torch.float32, device=self.device)

    @classmethod
    def check_data(cls, data: TrainingData, cfg: SafetyOnlyConfig) -> None:
        super().check_data(data, cfg)
        if cfg.nu_init <= 0:
            raise FeedbackgenError("safety_only uses nu_init as its fixed weight and it must be > 0; "
                                   "use e.g. --set nu_init=1")
        require_both_safety_classes(data, cls.name)

    def align_update(self, step: int) -> dict[str, torch.Tensor | float]:
        cfg, d = self.cfg, self.data
        s = d.sample(self.gen, d.n_safety, cfg.safety_batch)
        safe = d.safety_label[s]
        scores, kl = self.segment_scores(d.safety_segment[s], with_kl=cfg.zref_mode == "kl")
        zref = losses.zref_update(cfg.zref_mode, self.zref, scores, cfg.zref_momentum,
                                  kl.mean() if kl is not None else None, clamp=cfg.zref_clamp)
        g = losses.safety_alignment(scores, safe, zref, cfg.beta_s, cfg.eta)
        loss = self.nu * (1.0 - g)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.zref = zref
        with torch.no_grad():
            n_safe = safe.sum()
            s_det = scores.detach()
            return {"loss": loss.detach(), "g": g.detach(), "zref": zref, "safe_frac": n_safe / safe.numel(),
                    "score_safe": (s_det * safe).sum() / n_safe.clamp(min=1),
                    "score_unsafe": (s_det * (1 - safe)).sum() / (safe.numel() - n_safe).clamp(min=1)}

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd.update(nu=self.nu.clone(), zref=self.zref.clone())
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        super().load_state_dict(sd)
        self.nu = sd["nu"].to(self.device)
        self.zref = sd["zref"].to(self.device)
