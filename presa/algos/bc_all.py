"""BC-All: behaviour cloning on every transition of the store, for all ``total_steps``
(a baseline). Its settings are the shared ones only (``presa.config.BaseConfig``): ``bc_steps`` and
the alignment options are not among them, and giving one is an error."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from presa.algos.base import Algorithm, register
from presa.config import BaseConfig


@dataclass(frozen=True)
class BCAllConfig(BaseConfig):
    """BC-All's settings: the shared ones."""

    algo: str = "bc_all"


@register("bc_all")
class BCAll(Algorithm[BCAllConfig]):
    """Behaviour cloning on all transitions at learning rate ``lr``."""

    def phase(self, step: int) -> str:
        return "bc"

    def update(self, step: int) -> dict[str, torch.Tensor | float]:
        return self.bc_update()
