"""BC-All: behaviour cloning on every transition of the store, for all ``total_steps``
(a baseline; ``bc_steps`` and the alignment options are ignored)."""

from __future__ import annotations

import torch

from presa.algos.base import Algorithm, register


@register("bc_all")
class BCAll(Algorithm):
    """Behaviour cloning on all transitions at learning rate ``lr``."""

    def phase(self, step: int) -> str:
        return "bc"

    def update(self, step: int) -> dict[str, torch.Tensor | float]:
        return self.bc_update()
