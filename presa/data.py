"""Training tensors built once from a feedback store, and batch sampling on them.

Everything a training step needs is moved to the device once: normalised observations, actions,
a (S, H) matrix of the transition indices of every segment and a (S, H) matrix of discount
weights γ^t (0 beyond a segment's length), the preference table and the safety labels of the
chosen threshold. Batches are index draws with ``torch.randint`` on an explicit generator, so a
step makes no host/device copy and the same seed gives the same batches.

Example:
    >>> data = TrainingData.from_store("x.zarr", threshold=20.0, gamma=0.99)  # doctest: +SKIP
    >>> pairs = data.sample(generator, data.n_pairs, 96)                      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feedbackgen.errors import FeedbackgenError
from feedbackgen.store import FeedbackData, open_store

_STD_FLOOR = 1e-6


@dataclass
class TrainingData:
    """Device tensors for training on one store at one threshold.

    Attributes:
        obs: normalised observations, (N, obs) float32.
        actions: (N, act) float32.
        seg_index: transition index of step t of segment s, (S, H) int64 (padding repeats the last step).
        seg_weight: γ^t for real steps, 0 for padding, (S, H) float32.
        pref_a, pref_b: segment ids of each pair, (P,) int64.
        pref_label: y = P(b ≻ a), (P,) float32.
        safety_segment: segment ids, (M,) int64.
        safety_label: 1 safe / 0 unsafe at ``threshold``, (M,) float32.
        obs_mean, obs_std: the normaliser (std floored), (obs,) float32 on the CPU.
        threshold: κ; threshold_index: its column in the store.
        store: the opened store (numpy arrays; metadata, ids, oracle) for algorithms that need more.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    seg_index: torch.Tensor
    seg_weight: torch.Tensor
    pref_a: torch.Tensor
    pref_b: torch.Tensor
    pref_label: torch.Tensor
    safety_segment: torch.Tensor
    safety_label: torch.Tensor
    obs_mean: torch.Tensor
    obs_std: torch.Tensor
    threshold: float
    threshold_index: int
    device: torch.device
    store: FeedbackData
    store_path: Path

    @property
    def n_transitions(self) -> int:
        return int(self.obs.shape[0])

    @property
    def n_segments(self) -> int:
        return int(self.seg_index.shape[0])

    @property
    def n_pairs(self) -> int:
        return int(self.pref_a.shape[0])

    @property
    def n_safety(self) -> int:
        return int(self.safety_segment.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def horizon(self) -> int:
        return int(self.seg_index.shape[1])

    @property
    def task(self) -> dict | None:
        return self.store.metadata.get("task")

    @property
    def store_id(self) -> str:
        return self.store.store_id

    def sample(self, generator: torch.Generator, high: int, n: int) -> torch.Tensor:
        """``n`` uniform indices in [0, high) drawn on the device from ``generator``."""
        return torch.randint(high, (n,), generator=generator, device=self.device)

    @classmethod
    def from_store(cls, path: str | Path, *, threshold: float, gamma: float,
                   device: str | torch.device = "cpu",
                   label_sources: Sequence[str] = ("all",)) -> TrainingData:
        """Open a store with ``feedbackgen.store.open_store`` and build the training tensors.

        ``label_sources`` keeps only the preference and safety rows of those sources (``all``,
        ``human``, ``teacher`` or source ids; see ``feedbackgen.labels.select_sources``).

        Raises:
            FeedbackgenError: unreadable store, threshold not in the store, inconsistent tables, or
                label sources that select nothing.
        """
        store = open_store(path)
        return cls.from_feedback(store, threshold=threshold, gamma=gamma, device=device, path=Path(path),
                                 label_sources=label_sources)

    @classmethod
    def from_feedback(cls, store: FeedbackData, *, threshold: float, gamma: float,
                      device: str | torch.device = "cpu", path: Path | None = None,
                      label_sources: Sequence[str] = ("all",)) -> TrainingData:
        """Build the training tensors from an opened store (see :meth:`from_store`)."""
        dev = torch.device(device)
        k = store.threshold_index(threshold)
        obs_np = np.asarray(store.observations, dtype=np.float32)
        act_np = np.asarray(store.actions, dtype=np.float32)
        n = obs_np.shape[0]
        if n == 0:
            raise FeedbackgenError(f"store {path} holds no transitions; remake it with `feedbackgen make`")
        mean, std = observation_normaliser(store)
        if mean.shape != (obs_np.shape[1],) or std.shape != (obs_np.shape[1],):
            raise FeedbackgenError(f"store {path}: obs_mean/obs_std have the wrong length for "
                                   f"{obs_np.shape[1]}-dim observations; remake the store")
        start = np.asarray(store.segment_start, dtype=np.int64)
        length = np.asarray(store.segment_length, dtype=np.int64)
        if start.size and (length.min() < 1 or start.min() < 0 or (start + length).max() > n):
            raise FeedbackgenError(f"store {path}: a segment points outside the {n} transitions; "
                                   "the store is damaged, remake it")
        horizon = int(length.max()) if length.size else 1
        steps = np.arange(horizon, dtype=np.int64)
        index = start[:, None] + np.minimum(steps[None, :], length[:, None] - 1)
        weight = np.where(steps[None, :] < length[:, None], float(gamma) ** steps[None, :], 0.0)
        n_seg = start.shape[0]
        pref_a = np.asarray(store.pref_a, dtype=np.int64)
        pref_b = np.asarray(store.pref_b, dtype=np.int64)
        label = np.asarray(store.pref_label, dtype=np.float32)
        saf_seg = np.asarray(store.safety_segment, dtype=np.int64)
        saf_lab = np.asarray(store.safety_label)[:, k].astype(np.float32) if saf_seg.size else \
            np.zeros(0, np.float32)
        if list(label_sources) != ["all"]:
            pref_a, pref_b, label, saf_seg, saf_lab = _by_source(store, label_sources, pref_a, pref_b, label,
                                                                 saf_seg, saf_lab)
        for name, ids in (("preferences", np.concatenate([pref_a, pref_b])), ("safety", saf_seg)):
            if ids.size and (ids.min() < 0 or ids.max() >= n_seg):
                raise FeedbackgenError(f"store {path}: the {name} table names segments outside the "
                                       f"{n_seg} segments; the store is damaged, remake it")
        if label.size and (not np.all(np.isfinite(label)) or label.min() < 0 or label.max() > 1):
            raise FeedbackgenError(f"store {path}: preference labels must be P(b ≻ a) in [0, 1]; "
                                   "remake the store")
        if saf_lab.size and not np.all(np.isin(saf_lab, (0.0, 1.0))):
            raise FeedbackgenError(f"store {path}: safety labels must be 0 (unsafe) or 1 (safe); "
                                   "remake the store")

        def t(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x)).to(device=dev, dtype=dtype)

        obs_norm = (obs_np - mean) / std
        return cls(
            obs=t(obs_norm, torch.float32), actions=t(act_np, torch.float32),
            seg_index=t(index, torch.int64), seg_weight=t(weight, torch.float32),
            pref_a=t(pref_a, torch.int64), pref_b=t(pref_b, torch.int64), pref_label=t(label, torch.float32),
            safety_segment=t(saf_seg, torch.int64), safety_label=t(saf_lab, torch.float32),
            obs_mean=torch.as_tensor(mean), obs_std=torch.as_tensor(std),
            threshold=float(np.asarray(store.thresholds)[k]), threshold_index=k, device=dev, store=store,
            store_path=Path(path) if path is not None else Path(str(store.path)),
        )

    def segment_transitions(self, segments: torch.Tensor) -> torch.Tensor:
        """Unique transition indices covered by ``segments`` (e.g. the transitions of safe segments)."""
        rows = self.seg_index[segments]
        mask = self.seg_weight[segments] > 0
        return torch.unique(rows[mask])


def _by_source(store: FeedbackData, label_sources: Sequence[str], *arrays: np.ndarray) -> tuple:
    """Keep the preference rows (a, b, label) and safety rows (segment, label) of ``label_sources``."""
    from feedbackgen.labels import select_sources

    pref_mask, safety_mask = select_sources(store, list(label_sources))
    if not pref_mask.any() or not safety_mask.any():
        empty = "preference" if not pref_mask.any() else "safety"
        raise FeedbackgenError(f"label_sources {list(label_sources)} select no {empty} labels in the store "
                               f"({int(pref_mask.sum())} pairs, {int(safety_mask.sum())} safety rows); "
                               "add sources, e.g. --set label_sources=all (`feedbackgen info` lists them)")
    a, b, y, seg, lab = arrays
    return a[pref_mask], b[pref_mask], y[pref_mask], seg[safety_mask], lab[safety_mask]


def observation_normaliser(store: FeedbackData) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) as float32: the store's ``obs_mean``/``obs_std`` metadata, else computed from the
    observations. A std below 1e-6 (a constant dimension) is replaced by 1 so no division blows up."""
    meta = store.metadata or {}
    if meta.get("obs_mean") is not None and meta.get("obs_std") is not None:
        mean = np.asarray(meta["obs_mean"], dtype=np.float64)
        std = np.asarray(meta["obs_std"], dtype=np.float64)
    else:
        obs = np.asarray(store.observations, dtype=np.float64)
        mean, std = obs.mean(0), obs.std(0)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise FeedbackgenError("the store's obs_mean/obs_std are not finite; remake the store")
    std = np.where(std < _STD_FLOOR, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def store_fingerprint(store: FeedbackData) -> str:
    """SHA-256 over the store id, the thresholds and every array training reads (hex)."""
    h = hashlib.sha256()
    h.update(str(store.store_id).encode())
    for name in ("observations", "actions", "episode", "segment_start", "segment_length", "pref_a", "pref_b",
                 "pref_label", "thresholds", "safety_segment", "safety_label"):
        arr = np.ascontiguousarray(np.asarray(getattr(store, name)))
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.view(np.uint8) if arr.size else b"")
    return h.hexdigest()


def describe(data: TrainingData) -> dict[str, Any]:
    """Counts recorded in run.json."""
    return {"transitions": data.n_transitions, "segments": data.n_segments, "pairs": data.n_pairs,
            "safety_segments": data.n_safety, "horizon": data.horizon,
            "safe_fraction": float(data.safety_label.mean()) if data.n_safety else None}
