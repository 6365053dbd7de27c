"""Training tensors built once from a feedback store, and batch sampling on them.

Everything a training step needs is moved to the device once: normalised observations, actions,
a (S, H) matrix of the transition indices of every segment and a (S, H) matrix of discount
weights γ^t (0 beyond a segment's length), the preference table and the safety labels of the
chosen threshold. A store with a validation split (``feedbackgen make --val-fraction``) gives its
training rows to the training fields and its validation rows to :attr:`TrainingData.val`
(a :class:`ValidationSet`), so no algorithm trains on held-out feedback. Batches are index draws
with ``torch.randint`` on an explicit generator, so a step makes no host/device copy and the same
seed gives the same batches.

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
from feedbackgen.store import FeedbackData, open_store, split_columns

_STD_FLOOR = 1e-6


class _LabelRows:
    """Row counts of a set of preference pairs and safety rows."""

    pref_a: torch.Tensor
    safety_segment: torch.Tensor

    @property
    def n_pairs(self) -> int:
        return int(self.pref_a.shape[0])

    @property
    def n_safety(self) -> int:
        return int(self.safety_segment.shape[0])


@dataclass
class ValidationSet(_LabelRows):
    """The validation rows of a store (episodes held out by ``feedbackgen make --val-fraction``),
    as device tensors at the run's threshold.

    Attributes:
        pref_a, pref_b: segment ids of each validation pair, (V,) int64.
        pref_label: y = P(b ≻ a) as stored (with the teacher's noise), (V,) float32.
        pref_oracle: the oracle's P(b ≻ a) (``oracle/pref_label``), (V,) float32; None when the
            store has no oracle (stripped).
        safety_segment: segment ids, (Mv,) int64.
        safety_label: 1 safe / 0 unsafe at the threshold, as stored, (Mv,) float32.
        safety_oracle: the oracle's safety label at the threshold, (Mv,) float32; None without oracle.
    """

    pref_a: torch.Tensor
    pref_b: torch.Tensor
    pref_label: torch.Tensor
    pref_oracle: torch.Tensor | None
    safety_segment: torch.Tensor
    safety_label: torch.Tensor
    safety_oracle: torch.Tensor | None



@dataclass
class TrainingData(_LabelRows):
    """Device tensors for training on one store at one threshold.

    Attributes:
        obs: normalised observations, (N, obs) float32.
        actions: (N, act) float32.
        seg_index: transition index of step t of segment s, (S, H) int64 (padding repeats the last step).
        seg_weight: γ^t for real steps, 0 for padding, (S, H) float32.
        pref_a, pref_b: segment ids of each training pair, (P,) int64.
        pref_label: y = P(b ≻ a), (P,) float32.
        safety_segment: segment ids of the training safety rows, (M,) int64.
        safety_label: 1 safe / 0 unsafe at ``threshold``, (M,) float32.
        train_pref_oracle: the oracle's P(b ≻ a) of the training pairs, (P,) float32; None when
            the store has no oracle. For diagnostics only: no algorithm may train on it.
        train_safety_oracle: the oracle's safety label of the training rows at ``threshold``,
            (M,) float32; None without oracle.
        train_transitions: indices of the transitions of the training episodes (those outside the
            validation split), for behaviour cloning; None when every episode is a training one.
        val: the validation rows (:class:`ValidationSet`); None when the store has no validation
            split (older stores, ``--val-fraction 0``) or none of its validation rows is of the
            selected label sources.
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
    train_pref_oracle: torch.Tensor | None = None
    train_safety_oracle: torch.Tensor | None = None
    val: ValidationSet | None = None
    train_transitions: torch.Tensor | None = None

    @property
    def n_transitions(self) -> int:
        return int(self.obs.shape[0])

    @property
    def n_segments(self) -> int:
        return int(self.seg_index.shape[0])


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
        ``human``, ``teacher`` or source ids; see ``feedbackgen.labels.select_sources``), on the
        training and the validation side alike.

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
        pref_or, saf_or = _oracle_columns(store, k, path)
        pref_val, saf_val = split_columns(store)
        if pref_val.shape != pref_a.shape or saf_val.shape != saf_seg.shape:
            raise FeedbackgenError(f"store {path}: preferences/split or safety/split does not have one row "
                                   "per pair / safety row; the store is damaged, remake it")
        if list(label_sources) != ["all"]:
            pref_keep, saf_keep = _by_source(store, label_sources)
        else:
            pref_keep, saf_keep = np.ones(pref_a.shape[0], bool), np.ones(saf_seg.shape[0], bool)
        for name, ids in (("preferences", np.concatenate([pref_a[pref_keep], pref_b[pref_keep]])),
                          ("safety", saf_seg[saf_keep])):
            if ids.size and (ids.min() < 0 or ids.max() >= n_seg):
                raise FeedbackgenError(f"store {path}: the {name} table names segments outside the "
                                       f"{n_seg} segments; the store is damaged, remake it")
        kept_label, kept_saf = label[pref_keep], saf_lab[saf_keep]
        if kept_label.size and (not np.all(np.isfinite(kept_label)) or kept_label.min() < 0
                                or kept_label.max() > 1):
            raise FeedbackgenError(f"store {path}: preference labels must be P(b ≻ a) in [0, 1]; "
                                   "remake the store")
        if kept_saf.size and not np.all(np.isin(kept_saf, (0.0, 1.0))):
            raise FeedbackgenError(f"store {path}: safety labels must be 0 (unsafe) or 1 (safe); "
                                   "remake the store")

        def t(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x)).to(device=dev, dtype=dtype)

        def t_or_none(x: np.ndarray | None, rows: np.ndarray) -> torch.Tensor | None:
            return None if x is None else t(x[rows], torch.float32)

        train_p, train_s = pref_keep & ~pref_val, saf_keep & ~saf_val
        val_p, val_s = pref_keep & pref_val, saf_keep & saf_val
        val = None
        if val_p.any() or val_s.any():
            val = ValidationSet(
                pref_a=t(pref_a[val_p], torch.int64), pref_b=t(pref_b[val_p], torch.int64),
                pref_label=t(label[val_p], torch.float32), pref_oracle=t_or_none(pref_or, val_p),
                safety_segment=t(saf_seg[val_s], torch.int64), safety_label=t(saf_lab[val_s], torch.float32),
                safety_oracle=t_or_none(saf_or, val_s))
        obs_norm = (obs_np - mean) / std
        return cls(
            obs=t(obs_norm, torch.float32), actions=t(act_np, torch.float32),
            seg_index=t(index, torch.int64), seg_weight=t(weight, torch.float32),
            pref_a=t(pref_a[train_p], torch.int64), pref_b=t(pref_b[train_p], torch.int64),
            pref_label=t(label[train_p], torch.float32),
            safety_segment=t(saf_seg[train_s], torch.int64), safety_label=t(saf_lab[train_s], torch.float32),
            obs_mean=torch.as_tensor(mean), obs_std=torch.as_tensor(std),
            threshold=float(np.asarray(store.thresholds)[k]), threshold_index=k, device=dev, store=store,
            store_path=Path(path) if path is not None else Path(str(store.path)),
            train_pref_oracle=t_or_none(pref_or, train_p), train_safety_oracle=t_or_none(saf_or, train_s),
            val=val, train_transitions=_training_transitions(store, dev),
        )

    def segment_transitions(self, segments: torch.Tensor) -> torch.Tensor:
        """Unique transition indices covered by ``segments`` (e.g. the transitions of safe segments)."""
        rows = self.seg_index[segments]
        mask = self.seg_weight[segments] > 0
        return torch.unique(rows[mask])


def _oracle_columns(store: FeedbackData, k: int,
                    path: Path | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The oracle's P(b ≻ a) per pair row, (P,) float32, and its safety label at threshold column
    ``k`` per safety row, (M,) float32; (None, None) for a store without an oracle."""
    o = store.oracle
    if o is None:
        return None, None
    P, M = int(np.shape(store.pref_a)[0]), int(np.shape(store.safety_segment)[0])
    pref = np.asarray(o.pref_label, dtype=np.float32)
    saf = np.asarray(o.safety_label)
    if pref.shape != (P,) or saf.ndim != 2 or saf.shape[0] != M or not 0 <= k < saf.shape[1]:
        raise FeedbackgenError(f"store {path}: oracle/pref_label {pref.shape} or oracle/safety_label "
                               f"{saf.shape} does not match the {P} pairs and {M} safety rows; the store "
                               "is damaged, remake it")
    return pref, saf[:, k].astype(np.float32)


def _by_source(store: FeedbackData, label_sources: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(P,) and (M,) bool masks of the preference and safety rows of ``label_sources``."""
    from feedbackgen.labels import select_sources

    pref_mask, safety_mask = select_sources(store, list(label_sources))
    if not pref_mask.any() or not safety_mask.any():
        empty = "preference" if not pref_mask.any() else "safety"
        raise FeedbackgenError(f"label_sources {list(label_sources)} select no {empty} labels in the store "
                               f"({int(pref_mask.sum())} pairs, {int(safety_mask.sum())} safety rows); "
                               "add sources, e.g. --set label_sources=all (`feedbackgen info` lists them)")
    return pref_mask, safety_mask


def training_episodes(store: FeedbackData) -> np.ndarray:
    """Per episode: True unless it is in the store's validation split (``metadata.split``)."""
    n = int(np.asarray(store.episode_start).shape[0])
    split = (store.metadata or {}).get("split") or {}
    val_eps = np.asarray(split.get("val_episodes") or [], dtype=np.int64)
    keep = np.ones(n, dtype=bool)
    keep[val_eps[(val_eps >= 0) & (val_eps < n)]] = False
    return keep


def episode_transitions(store: FeedbackData, episodes: np.ndarray) -> np.ndarray:
    """Sorted transition indices of ``episodes`` (episode ids in increasing order), int64."""
    start = np.asarray(store.episode_start, dtype=np.int64)[episodes]
    length = np.asarray(store.episode_length, dtype=np.int64)[episodes]
    if start.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(s, s + n, dtype=np.int64) for s, n in zip(start, length, strict=True)])


def _training_transitions(store: FeedbackData, device: torch.device) -> torch.Tensor | None:
    """Transition indices of the training episodes (None when there is no split): held-out episodes
    are held out of behaviour cloning too, so the held-out metrics measure generalisation to
    behaviour no phase of training has seen."""
    keep = training_episodes(store)
    if keep.all():
        return None
    return torch.as_tensor(episode_transitions(store, np.flatnonzero(keep)), device=device)


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
        h.update(arr.view(np.uint8).data if arr.size else b"")
    for name in ("pref_split", "safety_split"):  # only in stores with a validation split
        if getattr(store, name, None) is not None:
            arr = np.ascontiguousarray(np.asarray(getattr(store, name), dtype=np.int8))
            h.update(name.encode())
            h.update(arr.view(np.uint8).data if arr.size else b"")
    return h.hexdigest()


def describe(data: TrainingData) -> dict[str, Any]:
    """Counts recorded in run.json (``pairs``/``safety_segments`` are the training rows;
    ``val_pairs``/``val_safety_segments`` the validation rows, 0 without a validation split)."""
    return {"transitions": data.n_transitions, "segments": data.n_segments, "pairs": data.n_pairs,
            "safety_segments": data.n_safety, "horizon": data.horizon,
            "safe_fraction": float(data.safety_label.mean()) if data.n_safety else None,
            "val_pairs": data.val.n_pairs if data.val is not None else 0,
            "val_safety_segments": data.val.n_safety if data.val is not None else 0}
