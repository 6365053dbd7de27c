"""Held-out diagnostics: do the policy's segment scores rank preferences and separate safe from
unsafe on feedback it never trained on?

A store made with a validation split (``feedbackgen make --val-fraction``) holds pairs and safety
segments from held-out episodes; ``presa.data.TrainingData.val`` has them. Every logging step the
trainer records, for the policy's own segment likelihood α·Σ_t γ^t·log π_θ(a_t|s_t) — the same
measure for every algorithm, so the BC reference and the baselines are comparable:

- ``val/pref_acc``: share of decided held-out pairs (y ≠ ½) whose score order agrees with the label;
- ``val/pref_acc_oracle``: the same against the noise-free oracle label;
- ``val/pref_acc_safe_safe_oracle``: against the oracle, on the pairs whose two segments are both
  safe at the run's threshold (by the oracle's segment cost) — whether preferences teach anything
  *among safe behaviour*, where safety alone cannot rank;
- ``val/safety_auc`` / ``val/safety_auc_oracle``: the AUC of the scores for "safe" against the
  labels / the oracle's labels.

Metrics that need an oracle are left out for a store without one (a stripped store). Alignment
methods also log the same metrics of their implicit reward S_θ (``val/implicit_...``, a log-ratio
against π_ref: it ranks pairs *relative to the reference's own ranking*) and of the BC reference's
likelihood (``val/ref_...``, the baseline).

Example:
    >>> import numpy as np
    >>> round(auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])), 3)
    0.75
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from feedbackgen.safety import segment_thresholds


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for ``positive`` (Mann–Whitney, ties count ½);
    None when one class is missing."""
    pos = np.asarray(positive).astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    edges = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [s.size]])
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pair_accuracy(score_a: np.ndarray, score_b: np.ndarray, label: np.ndarray) -> float | None:
    """Share of decided pairs (label ≠ ½) whose score order agrees with y = P(b ≻ a); a tie in the
    scores counts ½. None when no pair is decided."""
    decided = label != 0.5
    if not decided.any():
        return None
    diff = (score_b - score_a)[decided]
    want_b = label[decided] > 0.5
    agree = np.where(diff == 0, 0.5, ((diff > 0) == want_b).astype(np.float64))
    return float(agree.mean())


def segment_safe_oracle(store: Any, threshold_index: int) -> np.ndarray | None:
    """Per segment: safe (True) at the threshold by the oracle's segment cost and the store's safety
    rule, or None when the store has no oracle."""
    oracle = getattr(store, "oracle", None)
    if oracle is None or getattr(oracle, "segment_cost", None) is None:
        return None
    meta = store.metadata or {}
    rule = (meta.get("safety") or {}).get("rule", "scaled")
    t_max = int((meta.get("task") or {}).get("max_episode_steps", 1000))
    cost = np.asarray(oracle.segment_cost, dtype=np.float64)
    length = np.asarray(store.segment_length, dtype=np.int64)
    kappa = float(np.asarray(store.thresholds)[threshold_index])
    limit = np.empty_like(cost)
    for h in np.unique(length):
        limit[length == h] = segment_thresholds([kappa], int(h), t_max, rule)[0]
    return cost <= limit + 1e-9


@dataclass
class HeldoutSet:
    """Numpy views of the held-out rows (built once per run)."""

    pref_a: torch.Tensor
    pref_b: torch.Tensor
    pref_label: np.ndarray
    pref_oracle: np.ndarray | None
    safe_safe: np.ndarray | None
    safety_segment: torch.Tensor
    safety_label: np.ndarray
    safety_oracle: np.ndarray | None

    @classmethod
    def from_data(cls, data: Any) -> HeldoutSet | None:
        """From ``data.val`` (None when the store has no validation split)."""
        val = getattr(data, "val", None)
        if val is None or (int(val.pref_a.shape[0]) == 0 and int(val.safety_segment.shape[0]) == 0):
            return None
        safe = segment_safe_oracle(data.store, data.threshold_index)
        a, b = val.pref_a.cpu().numpy(), val.pref_b.cpu().numpy()

        def np_or_none(t: torch.Tensor | None) -> np.ndarray | None:
            return None if t is None else t.detach().cpu().numpy()

        return cls(pref_a=val.pref_a, pref_b=val.pref_b, pref_label=val.pref_label.cpu().numpy(),
                   pref_oracle=np_or_none(val.pref_oracle),
                   safe_safe=None if safe is None else (safe[a] & safe[b]),
                   safety_segment=val.safety_segment, safety_label=val.safety_label.cpu().numpy(),
                   safety_oracle=np_or_none(val.safety_oracle))

    def metrics(self, score: Callable[[torch.Tensor], torch.Tensor],
                prefix: str = "val/") -> dict[str, float]:
        """The held-out metrics of ``score`` (segment ids → scores), named ``prefix + name``."""
        out: dict[str, float | None] = {}
        n = int(self.pref_a.shape[0])
        if n:
            s = score(torch.cat([self.pref_a, self.pref_b])).float().cpu().numpy()
            sa, sb = s[:n], s[n:]
            out["pref_acc"] = pair_accuracy(sa, sb, self.pref_label)
            if self.pref_oracle is not None:
                out["pref_acc_oracle"] = pair_accuracy(sa, sb, self.pref_oracle)
                if self.safe_safe is not None and self.safe_safe.any():
                    m = self.safe_safe
                    out["pref_acc_safe_safe_oracle"] = pair_accuracy(sa[m], sb[m], self.pref_oracle[m])
        if int(self.safety_segment.shape[0]):
            s = score(self.safety_segment).float().cpu().numpy()
            out["safety_auc"] = auc(s, self.safety_label > 0.5)
            if self.safety_oracle is not None:
                out["safety_auc_oracle"] = auc(s, self.safety_oracle > 0.5)
        return {prefix + k: float(v) for k, v in out.items() if v is not None}
