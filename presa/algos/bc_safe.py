"""BC-Safe (oracle reference): behaviour cloning on the episodes whose ground-truth episode cost
is ≤ κ, as in OSRL/DSRL's BC-Safe.

It reads the ground truth from the store's ``oracle`` group (``oracle/episode_cost``), not from
the feedback, so it is a calibration reference against the published numbers
(``feedbackgen/data/offline_safe_rl_reference.csv``), not a method that learns from feedback. A
store stripped with ``feedbackgen strip`` has no oracle group and is refused with a clear error.
BC runs at learning rate ``lr`` for all ``total_steps``. Its settings are the shared ones only
(``presa.config.BaseConfig``): ``bc_steps`` and the alignment options are not among them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from feedbackgen.errors import FeedbackgenError
from presa.algos.base import PoolBehaviourCloning, register
from presa.config import BaseConfig
from presa.data import TrainingData, episode_transitions, training_episodes


def safe_episode_pool(data: TrainingData) -> torch.Tensor:
    """Sorted transition indices of every training episode (outside the store's validation split) with
    oracle episode cost ≤ ``data.threshold``.

    Raises:
        FeedbackgenError: the store has no oracle group (it was stripped).
    """
    store = data.store
    if store.oracle is None:
        raise FeedbackgenError(f"bc_safe needs the ground-truth episode costs, but the store "
                               f"{data.store_path} "
                               "has no oracle group (it was stripped); train on the unstripped store")
    cost = np.asarray(store.oracle.episode_cost, dtype=np.float64)
    keep = np.flatnonzero((cost <= float(data.threshold)) & training_episodes(store))
    return torch.as_tensor(episode_transitions(store, keep), device=data.device)


@dataclass(frozen=True)
class BCSafeConfig(BaseConfig):
    """BC-Safe's settings: the shared ones."""

    algo: str = "bc_safe"


@register("bc_safe")
class BCSafe(PoolBehaviourCloning[BCSafeConfig]):
    """Behaviour cloning on the ground-truth safe episodes (oracle reference)."""

    def __init__(self, cfg: BCSafeConfig, data: TrainingData, generator: torch.Generator) -> None:
        super().__init__(cfg, data, generator)
        self.pool = safe_episode_pool(data)

    @classmethod
    def check_data(cls, data: TrainingData, cfg: BCSafeConfig) -> None:
        super().check_data(data, cfg)
        if safe_episode_pool(data).numel() == 0:
            raise FeedbackgenError(f"bc_safe: no episode of the store has cost ≤ {data.threshold:g}; "
                                   "choose a larger --threshold")
