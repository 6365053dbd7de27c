"""``feedbackgen make``: from a trajectory source to a versioned feedback store.

One frozen :class:`MakeConfig` (validated on construction) -> :func:`make_store`:

1. find the source (:func:`feedbackgen.sources.locate_source`), hash it, read it lazily;
2. sample ``2 * n_pairs`` pair segments (pair i is segment i vs segment ``n_pairs + i``) and, with
   ``safety_from_pairs=False``, ``n_safety`` more segments for the safety channel (otherwise the
   safety segments are the first ``n_safety`` pair segments — the draws are i.i.d., so any subset
   is an unbiased sample);
   With ``val_fraction > 0`` the episodes are split first (a seeded choice of about
   ``val_fraction`` of the episodes long enough for a segment, at least one on each side): the
   last ``round(val_fraction * n_pairs)`` pairs and the last ``round(val_fraction * n_safety)``
   safety rows are drawn from the validation episodes only, the others from the training
   episodes only, so no validation segment shares a transition with a training segment (see
   :func:`split_counts`);
3. label the pairs with the teacher (y = P(b ≻ a)); pairs the teacher skips are dropped, their
   segments stay in the segment table;
4. label the safety segments for every threshold of the task (1 = safe);
5. compute the observation mean/std, the oracle group and the quality summary;
6. write the store atomically, streaming the transitions from the source in chunks.

Randomness: ``numpy.random.SeedSequence(seed).spawn(5)`` gives five independent generators, in
order: pair segments, teacher, separate safety segments, safety noise, validation episodes (the
first four are those of ``spawn(4)``, so a store without a split is drawn as before the split
existed). Same source + same config = identical arrays (``feedbackgen verify`` relies on it).

Example:
    >>> from feedbackgen.make import MakeConfig, make_store                  # doctest: +SKIP
    >>> make_store(MakeConfig(task="BallRun", noise=0.1, seed=0, out="ballrun.zarr"))  # doctest: +SKIP
    PosixPath('ballrun.zarr')
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from feedbackgen._io import git_commit
from feedbackgen.errors import FeedbackgenError
from feedbackgen.frames import attach_frames
from feedbackgen.quality import compute_quality
from feedbackgen.safety import SafetySpec, label_safety
from feedbackgen.segments import SegmentSpec, gather_windows, sample_segments
from feedbackgen.sources import (
    SCAN_CHUNK_ROWS,
    SOURCE_FORMAT,
    Trajectories,
    locate_source,
    read_dsrl,
    sha256_file,
)
from feedbackgen.store import SCHEMA_VERSION, FeedbackData, OracleData, write_store
from feedbackgen.tasks import Task, get_task
from feedbackgen.teachers import TeacherSpec, label_pairs

ProgressFn = Callable[[str, int, int], None]
"""``progress(step, done, total)``: called as a long step advances (``done`` is absolute)."""

SAFETY_NOISE_MODELS = ("none", "flip", "asymmetric", "logistic")
STORE_NAMESPACE = "feedbackgen"
STORE_VERSION = 1
_DEFAULT_SEGMENT_LENGTH = 20
# segment tables index with int64 but count episodes/lengths in int32; far above any real budget
_MAX_LABELS = 10**9
# parameters that do not change the store's content
_NON_CONTENT_FIELDS = ("source", "out", "overwrite", "download")
DEFAULT_VAL_FRACTION = 0.1


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_prob(x: Any) -> bool:
    real = isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
    return real and 0.0 <= x <= 1.0


def parse_safety_noise(text: str, eps: float) -> dict[str, Any]:
    """Turn ``--safety-noise-model`` into :class:`SafetySpec` noise fields.

    Forms: ``none``; ``flip`` (probability ``eps``); ``asymmetric`` (both rates ``eps``) or
    ``asymmetric:false_safe=A,false_unsafe=B``; ``logistic`` (τ = 1) or ``logistic:tau=T``.

    Example:
        >>> parse_safety_noise("asymmetric:false_safe=0.2", 0.05)
        {'noise': 'asymmetric', 'eps': 0.05, 'false_safe': 0.2, 'false_unsafe': 0.05}
    """
    name, _, arg = str(text).strip().partition(":")
    name = name.strip().lower()
    if name not in SAFETY_NOISE_MODELS:
        raise FeedbackgenError(f"unknown safety noise model {text!r}; use one of: "
                               f"{', '.join(SAFETY_NOISE_MODELS)} (e.g. "
                               "'asymmetric:false_safe=0.1,false_unsafe=0.05' or 'logistic:tau=2')")
    out: dict[str, Any] = {"noise": name, "eps": float(eps)}
    allowed = {"none": (), "flip": ("eps",), "asymmetric": ("false_safe", "false_unsafe"),
               "logistic": ("tau",)}[name]
    if name == "asymmetric":
        out.update(false_safe=float(eps), false_unsafe=float(eps))
    for item in filter(None, (p.strip() for p in arg.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in allowed:
            takes = ", ".join(allowed) or "no parameters"
            raise FeedbackgenError(f"safety noise model {name!r} takes {takes} as key=value, got {item!r}")
        try:
            out[key] = float(raw)
        except ValueError:
            raise FeedbackgenError(f"safety noise model {name!r}: {key}={raw.strip()!r} "
                                   "is not a number") from None
    return out


@dataclass(frozen=True)
class MakeConfig:
    """Everything that defines one ``feedbackgen make`` run; validated on construction, never mutated.

    Attributes:
        task: task name (``feedbackgen tasks`` lists them).
        source: trajectory file; None finds it (shipped dataset, DSRL cache, download).
        out: the store directory; None means :meth:`default_out`.
        noise: mistake probability ε for both channels (default 0.1).
        pref_noise: mistake probability of the preference teacher (overrides ``noise``).
        safety_noise: noise probability of the safety labels (overrides ``noise``).
        teacher: teacher spec, e.g. ``oracle``, ``bt:beta=1``, ``myopic:gamma=0.9+skip:margin=1``
            (a ``mistake`` component in it wins over ``noise``/``pref_noise``).
        safety_rule: ``scaled`` (default), ``episode`` or ``zero``.
        safety_noise_model: ``flip`` (default), ``none``, ``asymmetric[:false_safe=A,false_unsafe=B]``,
            ``logistic[:tau=T]``.
        segment_length: H in steps (default 20), or None with ``segment_fraction``.
        segment_fraction: H as a fraction of the task's max episode length.
        n_pairs: number of preference pairs asked of the teacher (default 10,000).
        n_safety: number of safety-labelled segments (default 10,000).
        safety_from_pairs: safety segments are the first ``n_safety`` pair segments (True), or
            drawn separately (False).
        val_fraction: share of the episodes (and of the pairs and safety rows) held out as a
            validation split, in [0, 1); 0 makes no split (default 0.1).
        seed: the one seed of the run.
        overwrite: replace an existing store at ``out``.
        download: allow downloading the source.
    """

    task: str
    source: Path | None = None
    out: Path | None = None
    noise: float = 0.1
    pref_noise: float | None = None
    safety_noise: float | None = None
    teacher: str = "oracle"
    safety_rule: str = "scaled"
    safety_noise_model: str = "flip"
    segment_length: int | None = _DEFAULT_SEGMENT_LENGTH
    segment_fraction: float | None = None
    n_pairs: int = 10_000
    n_safety: int = 10_000
    safety_from_pairs: bool = True
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = 0
    overwrite: bool = False
    download: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task.strip():
            raise FeedbackgenError("no task given; pass --task (see `feedbackgen tasks`)")
        for name in ("source", "out"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if self.segment_fraction is not None and self.segment_length == _DEFAULT_SEGMENT_LENGTH:
            object.__setattr__(self, "segment_length", None)
        for name in ("noise", "pref_noise", "safety_noise"):
            value = getattr(self, name)
            if value is None and name != "noise":
                continue
            if not _is_prob(value):
                flag = "--" + name.replace("_", "-")
                raise FeedbackgenError(f"{flag} must be a probability in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))
        if not _is_prob(self.val_fraction) or self.val_fraction >= 1.0:
            raise FeedbackgenError(f"--val-fraction must be in [0, 1) (0 = no validation split), "
                                   f"got {self.val_fraction!r}")
        object.__setattr__(self, "val_fraction", float(self.val_fraction))
        if not _is_int(self.n_pairs) or self.n_pairs < 1:
            raise FeedbackgenError(f"--n-pairs must be a whole number >= 1, got {self.n_pairs!r}")
        if self.n_pairs > _MAX_LABELS or (_is_int(self.n_safety) and self.n_safety > _MAX_LABELS):
            raise FeedbackgenError(f"--n-pairs and --n-safety must be at most {_MAX_LABELS:,}, got "
                                   f"{self.n_pairs} and {self.n_safety}")
        if not _is_int(self.n_safety) or self.n_safety < 0:
            raise FeedbackgenError(f"--n-safety must be a whole number >= 0, got {self.n_safety!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise FeedbackgenError(f"--seed must be a whole number >= 0, got {self.seed!r}")
        if self.safety_from_pairs and self.n_safety > 2 * self.n_pairs:
            raise FeedbackgenError(f"--n-safety {self.n_safety} exceeds the {2 * self.n_pairs} pair "
                                   "segments; lower it or pass --separate-safety")
        # building the specs validates them (each raises a one-line FeedbackgenError)
        self.segment_spec()
        self.teacher_spec()
        self.safety_spec()

    @property
    def pref_eps(self) -> float:
        """The preference mistake probability: ``pref_noise``, else ``noise``."""
        return self.noise if self.pref_noise is None else self.pref_noise

    @property
    def safety_eps(self) -> float:
        """The safety noise probability: ``safety_noise``, else ``noise``."""
        return self.noise if self.safety_noise is None else self.safety_noise

    def segment_spec(self) -> SegmentSpec:
        if self.segment_length is None:
            return SegmentSpec(length=None, fraction=self.segment_fraction)
        return SegmentSpec(length=self.segment_length, fraction=self.segment_fraction)

    def teacher_spec(self) -> TeacherSpec:
        return TeacherSpec.parse(self.teacher, mistake=self.pref_eps)

    def safety_spec(self) -> SafetySpec:
        noise = parse_safety_noise(self.safety_noise_model, self.safety_eps)
        return SafetySpec(rule=self.safety_rule, **noise)

    def default_out(self) -> Path:
        """``datasets/stores/<task>-noise<E>-seed<S>.zarr`` (relative to the working folder)."""
        return Path("datasets") / "stores" / f"{self.task}-noise{self.noise:g}-seed{self.seed}.zarr"

    @property
    def out_path(self) -> Path:
        return self.out if self.out is not None else self.default_out()

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-able (paths as strings)."""
        d = asdict(self)
        for name in ("source", "out"):
            d[name] = str(d[name]) if d[name] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], **override: Any) -> MakeConfig:
        """Rebuild a config recorded in a store (unknown keys are an error).

        A config recorded before the validation split existed has no ``val_fraction``: that store
        was made without a split, so it reads as ``val_fraction=0``.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise FeedbackgenError(f"make config: unknown keys {unknown}; the store was made by another "
                                   "version of feedbackgen")
        return cls(**{"val_fraction": 0.0, **d, **override})

    def content_params(self) -> dict[str, Any]:
        """The fields that determine the store's content (not where it goes or comes from).

        ``val_fraction`` is left out when it is 0: such a store is the one made before the split
        existed, and keeps that store's id (so older stores still verify).
        """
        d = self.to_dict()
        if not d["val_fraction"]:
            del d["val_fraction"]
        return {k: v for k, v in d.items() if k not in _NON_CONTENT_FIELDS}


def _library_versions() -> dict[str, str]:
    import h5py
    import zarr

    return {"numpy": np.__version__, "zarr": zarr.__version__, "h5py": h5py.__version__,
            "python": platform.python_version()}


def store_id_for(task: str, params: dict[str, Any], source_sha256: str) -> str:
    """``feedbackgen/<task>-<8 hex of the parameters and source hash>-v1``."""
    blob = json.dumps({"params": params, "source_sha256": source_sha256}, sort_keys=True)
    return f"{STORE_NAMESPACE}/{task}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}-v{STORE_VERSION}"


def observation_stats(observations: Any, *,
                      progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and (population) std of (N, obs) observations, in row chunks.

    Chunk moments are merged with Chan et al.'s parallel update in float64, so a lazy
    dataset is read once and never loaded whole.
    """
    n_rows, dim = int(observations.shape[0]), int(observations.shape[1])
    count, mean, m2 = 0, np.zeros(dim), np.zeros(dim)
    for lo in range(0, n_rows, SCAN_CHUNK_ROWS):
        block = np.asarray(observations[lo:lo + SCAN_CHUNK_ROWS], dtype=np.float64)
        nb = block.shape[0]
        bmean = block.mean(axis=0)
        bm2 = ((block - bmean) ** 2).sum(axis=0)
        delta = bmean - mean
        total = count + nb
        mean = mean + delta * (nb / total)
        m2 = m2 + bm2 + delta ** 2 * (count * nb / total)
        count = total
        if progress is not None:
            progress("observation statistics", min(n_rows, lo + nb), n_rows)
    std = np.sqrt(m2 / count) if count else np.zeros(dim)
    return mean, std


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def split_counts(n_pairs: int, n_safety: int, val_fraction: float, *,
                 safety_from_pairs: bool) -> tuple[int, int]:
    """``(V, M_val)``: the pairs and safety rows asked for on the validation side.

    ``V = round(val_fraction * n_pairs)`` and ``M_val = round(val_fraction * n_safety)`` (half
    up), each leaving at least one training row when there are two or more. With safety on the
    pair segments, ``M_val`` is also kept within the ``2 V`` validation pair segments and the
    ``2 (n_pairs - V)`` training ones.

    Example:
        >>> split_counts(200, 150, 0.1, safety_from_pairs=True)
        (20, 15)
    """
    if val_fraction <= 0:
        return 0, 0
    V = min(_round_half_up(val_fraction * n_pairs), max(n_pairs - 1, 0))
    M_val = min(_round_half_up(val_fraction * n_safety), max(n_safety - 1, 0))
    if safety_from_pairs:
        M_val = max(min(M_val, 2 * V), n_safety - 2 * (n_pairs - V))
    return V, M_val


def choose_validation_episodes(episode_length: np.ndarray, H: int, val_fraction: float,
                               rng: np.random.Generator) -> np.ndarray:
    """The validation episodes: a seeded choice of ``round(val_fraction * E)`` of the ``E``
    episodes with at least ``H`` steps (the only ones a segment can come from), at least one and
    at most ``E - 1``; sorted int64 ids.

    Raises:
        FeedbackgenError: fewer than two episodes have ``H`` steps (nothing to hold out).
    """
    eligible = np.flatnonzero(np.asarray(episode_length) >= H)
    if eligible.size < 2:
        raise FeedbackgenError(f"--val-fraction {val_fraction:g} holds out whole episodes, but only "
                               f"{eligible.size} episode has at least {H} steps; pass --val-fraction 0 "
                               "(no validation split) or a smaller --segment-length")
    k = min(max(_round_half_up(val_fraction * eligible.size), 1), eligible.size - 1)
    return np.sort(rng.choice(eligible, size=k, replace=False)).astype(np.int64)


class _Progressed:
    """An array-like that reports how far a chunked reader (``write_store``) has sliced it."""

    def __init__(self, array: Any, step: str, progress: ProgressFn) -> None:
        self._array, self._step, self._progress = array, step, progress
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key: Any) -> Any:
        out = self._array[key]
        if isinstance(key, slice):
            self._progress(self._step, min(int(self.shape[0]), key.stop or 0), int(self.shape[0]))
        return out


def build_feedback(cfg: MakeConfig, task: Task, traj: Trajectories, source: dict[str, Any], *,
                   progress: ProgressFn | None = None) -> FeedbackData:
    """Sample, label and summarise; the transitions stay lazy (views of ``traj``).

    Args:
        cfg: the run's configuration.
        task: its task.
        traj: the source, read with :func:`feedbackgen.sources.read_dsrl`.
        source: the ``source`` metadata record (path, format, sha256, ...).
        progress: optional progress callback.

    Returns:
        The store's content, ready for :func:`feedbackgen.store.write_store` (which streams the
        transitions) or for comparison by :mod:`feedbackgen.verify`.

    Raises:
        FeedbackgenError: e.g. no episode is at least H steps long.
    """
    seg_spec = cfg.segment_spec()
    teacher = cfg.teacher_spec()
    safety = cfg.safety_spec()
    H = seg_spec.resolve(task.max_episode_steps)
    thresholds = np.asarray(task.thresholds, dtype=np.float64)
    rng_seg, rng_pref, rng_safe_seg, rng_safe, rng_split = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5))
    P, M = cfg.n_pairs, cfg.n_safety
    ep_start, ep_len = traj.episode_start, traj.episode_length

    split = cfg.val_fraction > 0
    V, M_val = split_counts(P, M, cfg.val_fraction, safety_from_pairs=cfg.safety_from_pairs)
    val_eps: np.ndarray | None = None  # episode ids of each side, with a split only
    train_eps: np.ndarray | None = None
    if split:
        # whole episodes on each side; the last V pairs (segments P-V..P-1 and 2P-V..2P-1) are
        # drawn from the validation episodes, the others from the training episodes
        sample_segments(ep_start, ep_len, 0, H, rng_seg)  # the usual error when no episode has H steps
        val_eps = choose_validation_episodes(ep_len, H, cfg.val_fraction, rng_split)
        train_eps = np.setdiff1d(np.arange(traj.n_episodes, dtype=np.int64), val_eps)
        tr = sample_segments(ep_start, ep_len, 2 * (P - V), H, rng_seg, episodes=train_eps)
        va = sample_segments(ep_start, ep_len, 2 * V, H, rng_seg, episodes=val_eps)
        seg_ep, seg_start, seg_len = (np.concatenate([t[:P - V], v[:V], t[P - V:], v[V:]])
                                      for t, v in zip(tr, va, strict=True))
        train_ids = np.concatenate([np.arange(P - V), np.arange(P, 2 * P - V)]).astype(np.int64)
        val_ids = np.concatenate([np.arange(P - V, P), np.arange(2 * P - V, 2 * P)]).astype(np.int64)
    else:
        seg_ep, seg_start, seg_len = sample_segments(ep_start, ep_len, 2 * P, H, rng_seg)
        train_ids, val_ids = np.arange(2 * P, dtype=np.int64), np.zeros(0, np.int64)
    if cfg.safety_from_pairs:  # the first training pair segments, then the first validation ones
        safety_segment = np.concatenate([train_ids[:M - M_val], val_ids[:M_val]])
    else:
        s_tr = sample_segments(ep_start, ep_len, M - M_val, H, rng_safe_seg, episodes=train_eps)
        s_va = sample_segments(ep_start, ep_len, M_val, H, rng_safe_seg, episodes=val_eps) if split \
            else (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int32))
        seg_ep, seg_start, seg_len = (np.concatenate(x).astype(x[0].dtype) for x in zip(
            (seg_ep, seg_start, seg_len), s_tr, s_va, strict=True))
        safety_segment = np.arange(2 * P, 2 * P + M, dtype=np.int64)
    if progress is not None:
        progress("labelling", 0, 2)
    rewards_w = gather_windows(traj.rewards, seg_start, H)
    costs_w = gather_windows(traj.costs, seg_start, H)
    segment_return = rewards_w.sum(axis=1)
    segment_cost = costs_w.sum(axis=1)

    pairs = label_pairs(rewards_w[:P], rewards_w[P:2 * P], teacher, rng_pref)
    keep = np.flatnonzero(pairs.keep)
    pref_a = keep.astype(np.int64)
    pref_b = (keep + P).astype(np.int64)
    pref_split = (keep >= P - V).astype(np.int8) if split else None
    safety_split = (np.arange(M) >= M - M_val).astype(np.int8) if split else None
    if progress is not None:
        progress("labelling", 1, 2)
    safety_label, safety_oracle = label_safety(costs_w[safety_segment], thresholds, safety,
                                               max_episode_steps=task.max_episode_steps, rng=rng_safe)
    if progress is not None:
        progress("labelling", 2, 2)
    del rewards_w, costs_w

    obs_mean, obs_std = observation_stats(traj.observations, progress=progress)
    episode_reward, episode_cost = traj.episode_returns()
    episode = np.repeat(np.arange(traj.n_episodes, dtype=np.int32), ep_len)

    oracle = OracleData(
        rewards=traj.rewards, costs=traj.costs,
        episode_reward=episode_reward.astype(np.float32), episode_cost=episode_cost.astype(np.float32),
        segment_return=segment_return.astype(np.float32), segment_cost=segment_cost.astype(np.float32),
        pref_label=pairs.oracle[keep], safety_label=safety_oracle,
    )
    quality = compute_quality(
        pref_a=pref_a, pref_b=pref_b, pref_label=pairs.label[keep], safety_label=safety_label,
        thresholds=thresholds, segment_episode=seg_ep, n_episodes=traj.n_episodes, n_pairs_requested=P,
        oracle_pref_label=pairs.oracle[keep], oracle_safety_label=safety_oracle,
        segment_return=segment_return,
    )
    params = cfg.content_params()
    split_meta: dict[str, Any] = {}
    if val_eps is not None and pref_split is not None:  # both are made exactly when there is a split
        split_meta["split"] = split_record(cfg, val_eps, traj.n_episodes, int(np.count_nonzero(ep_len >= H)),
                                           V, pref_split, M_val)
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "label_convention": {"preference": "y = P(b > a): 1 b preferred, 0 a preferred, 0.5 equal",
                             "safety": "1 safe, 0 unsafe; one column per threshold"},
        "task": task.to_dict(),
        "source": source,
        "segments": {**seg_spec.to_dict(), "resolved_length": H, "seed": cfg.seed, "rng_streams": [0],
                     "n": int(seg_start.shape[0]), "n_pair_segments": 2 * P,
                     "pairing": "pair i = (segment i, segment n_pairs + i)"},
        "preferences": {"teacher": teacher.to_dict(), "teacher_text": cfg.teacher, "noise": cfg.pref_eps,
                        "seed": cfg.seed, "rng_streams": [1], "n_requested": P, "n": int(keep.size),
                        "n_skipped": int(P - keep.size)},
        "safety": {"rule": safety.rule, "noise_model": safety.noise, "noise": cfg.safety_eps,
                   "spec": safety.to_dict(), "noise_model_text": cfg.safety_noise_model,
                   "thresholds": thresholds.tolist(), "seed": cfg.seed,
                   "rng_streams": [3] if cfg.safety_from_pairs else [2, 3], "n": M,
                   "shared_with_pairs": cfg.safety_from_pairs},
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        **split_meta,
        "params": params,
        "toolkit_version": _toolkit_version(),
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "libraries": _library_versions(),
        "obs_mean": obs_mean.tolist(),
        "obs_std": obs_std.tolist(),
        "obs_dim": traj.obs_dim, "act_dim": traj.act_dim,
    }
    transitions: dict[str, Any] = {"observations": traj.observations,
                                   "next_observations": traj.next_observations, "actions": traj.actions}
    if progress is not None:
        transitions = {k: _Progressed(v, f"writing {k}", progress) for k, v in transitions.items()}
    return FeedbackData(
        **transitions, episode=episode, terminations=traj.terminations, truncations=traj.truncations,
        episode_start=ep_start, episode_length=ep_len, segment_episode=seg_ep, segment_start=seg_start,
        segment_length=seg_len, pref_a=pref_a, pref_b=pref_b, pref_label=pairs.label[keep],
        pref_prob=pairs.prob[keep], thresholds=thresholds.astype(np.float32), safety_segment=safety_segment,
        safety_label=safety_label, oracle=oracle, metadata=metadata, quality=quality,
        store_id=store_id_for(task.name, params, source["sha256"]), pref_split=pref_split,
        safety_split=safety_split,
    )


def split_record(cfg: MakeConfig, val_eps: np.ndarray, n_episodes: int, n_eligible: int, n_val_pairs: int,
                 pref_split: np.ndarray, n_val_safety: int) -> dict[str, Any]:
    """The ``metadata.split`` entry of a store made with a validation split."""
    return {"unit": "episode", "val_fraction": cfg.val_fraction, "seed": cfg.seed, "rng_streams": [4],
            "val_episodes": [int(e) for e in val_eps], "n_val_episodes": int(val_eps.size),
            "n_episodes": int(n_episodes), "n_episodes_eligible": int(n_eligible),
            "n_val_pairs_requested": int(n_val_pairs), "n_val_pairs": int(pref_split.sum()),
            "n_val_safety": int(n_val_safety),
            "rows": "preferences/split and safety/split: 1 validation, 0 training; validation rows use "
                    "segments of val_episodes only, training rows made here none of them"}


def _toolkit_version() -> str:
    from feedbackgen import __version__

    return __version__


def source_record(path: Path, sha256: str, traj: Trajectories) -> dict[str, Any]:
    """The ``source`` metadata entry."""
    return {"path": str(path.resolve()), "file_name": path.name, "format": SOURCE_FORMAT, "sha256": sha256,
            "transitions": traj.n_transitions, "episodes": traj.n_episodes, "obs_dim": traj.obs_dim,
            "act_dim": traj.act_dim, "attrs": {k: v for k, v in traj.attrs.items() if _json_ok(v)}}


def _json_ok(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return not (isinstance(v, float) and not math.isfinite(v))


def open_source(cfg: MakeConfig, task: Task, *, source: str | Path | None = None,
                progress: ProgressFn | None = None) -> tuple[Path, str, Trajectories]:
    """Locate, hash and lazily read the source of ``cfg`` (``source`` overrides ``cfg.source``)."""
    from feedbackgen.download import check_recorded_checksum

    path = locate_source(task, source if source is not None else cfg.source, download=cfg.download,
                         progress=progress)
    digest = sha256_file(path, progress=progress)
    check_recorded_checksum(path, digest)
    return path, digest, read_dsrl(path, lazy=True, progress=progress)


def make_store(cfg: MakeConfig, progress: ProgressFn | None = None) -> Path:
    """Make the feedback store described by ``cfg`` and return its path.

    Raises:
        FeedbackgenError: the store exists (without ``overwrite``), the source is missing or
            invalid, or the parameters do not fit the data. Nothing is left under the output path.
    """
    out = cfg.out_path
    if out.exists() and not cfg.overwrite:
        raise FeedbackgenError(f"{out} already exists; pass --overwrite to replace it "
                               "or choose another --out")
    task = get_task(cfg.task)
    path, digest, traj = open_source(cfg, task, progress=progress)
    with traj:
        try:
            data = build_feedback(cfg, task, traj, source_record(path, digest, traj), progress=progress)
        except MemoryError:
            n_seg = 2 * cfg.n_pairs + (0 if cfg.safety_from_pairs else cfg.n_safety)
            raise FeedbackgenError(f"not enough memory to sample and label {n_seg} segments; "
                                   "lower --n-pairs / --n-safety") from None
        attach_frames(data, path, digest)  # recorded frames (collect --record-frames), if the source has them
        try:
            return write_store(out, data, overwrite=cfg.overwrite)
        except OSError as exc:
            reason = exc.strerror or exc
            raise FeedbackgenError(f"cannot write {out} ({reason}); choose another --out") from None
