"""BC-Safe-Seg: behaviour cloning on the transitions of the segments labelled safe at the run's
threshold κ (a baseline that uses the safety labels but not the preferences).

The pool is the set of distinct transitions covered by at least one segment whose safety label
(the store's noisy label, column κ) is 1; a transition in several safe segments is counted once,
so every pool transition is equally likely in a batch. BC runs at learning rate ``lr`` for all
``total_steps``. Its settings are the shared ones only (``presa.config.BaseConfig``): ``bc_steps`` and
the alignment options are not among them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from feedbackgen.errors import FeedbackgenError
from presa.algos.base import PoolBehaviourCloning, register
from presa.config import BaseConfig
from presa.data import TrainingData


def safe_segment_pool(data: TrainingData) -> torch.Tensor:
    """Sorted unique transition indices of the segments labelled safe at ``data.threshold``."""
    safe = data.safety_segment[data.safety_label > 0.5]
    return data.segment_transitions(safe)


@dataclass(frozen=True)
class BCSafeSegConfig(BaseConfig):
    """BC-Safe-Seg's settings: the shared ones."""

    algo: str = "bc_safe_seg"


@register("bc_safe_seg")
class BCSafeSeg(PoolBehaviourCloning[BCSafeSegConfig]):
    """Behaviour cloning on the transitions of safe-labelled segments."""

    needs_safety = True

    def __init__(self, cfg: BCSafeSegConfig, data: TrainingData, generator: torch.Generator) -> None:
        super().__init__(cfg, data, generator)
        self.pool = safe_segment_pool(data)

    @classmethod
    def check_data(cls, data: TrainingData, cfg: BCSafeSegConfig) -> None:
        super().check_data(data, cfg)
        if not bool((data.safety_label > 0.5).any()):
            raise FeedbackgenError(f"bc_safe_seg: no segment is labelled safe at threshold "
                                   f"{data.threshold:g}; "
                                   "choose a larger --threshold or a store with safe segments")
