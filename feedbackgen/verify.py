"""Integrity checks of a feedback store, shared by the CLI and the tests.

- :func:`validate_store`: structural integrity, without the source: every array present with its
  dtype and a consistent shape, index ranges (segments inside their episode, pairs and safety
  rows pointing at existing segments), label values, finite transitions, the oracle consistent
  with itself, and the metadata keys the schema promises. In a store with derived next
  observations (schema 2) the stored ``transitions/final_next_observations`` is checked (dtype,
  one row per episode, finite) instead of a full next-observations array.
- :func:`verify_store`: recompute the store from its recorded source and parameters and compare
  every array (and the store id, quality summary and content metadata) exactly. Derived next
  observations are compared row by row with the source's ``next_observations``, so a tampered
  final row, or a source whose next observations do not continue the episode, is a mismatch.
  The validation split (``preferences/split``, ``safety/split``, ``metadata.split``) is recomputed
  and compared too; a store without one must recompute without one.

Both return a report; a store is sound when the report's ``problems``/``mismatches`` are empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feedbackgen._io import jsonable
from feedbackgen.errors import FeedbackgenError
from feedbackgen.sources import SCAN_CHUNK_ROWS, episode_sums
from feedbackgen.store import (
    FINAL_NEXT_OBSERVATIONS,
    NEXT_OBS_DERIVED,
    open_store,
    optional_arrays,
    schema_arrays,
)

STORE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+-v\d+$")
REQUIRED_METADATA: dict[str, tuple[str, ...]] = {
    "task": ("name", "suite", "max_episode_steps", "thresholds"),
    "source": ("path", "format", "sha256", "transitions", "episodes"),
    "segments": ("method", "length", "seed"),
    "preferences": ("teacher", "seed", "n"),
    "safety": ("rule", "thresholds", "seed", "n", "shared_with_pairs"),
    "seed": (), "toolkit_version": (), "git_commit": (), "created": (), "libraries": (),
    "obs_mean": (), "obs_std": (), "config": (),
}
REQUIRED_QUALITY = ("preference_agreement", "safety_agreement", "tie_rate", "skip_rate", "safe_fraction",
                    "segments_per_episode", "return_gap")
# metadata that depends on when/where a store was made, not on its content
_VOLATILE_METADATA = ("created", "git_commit", "toolkit_version", "libraries", "config", "source", "stripped",
                      "frames",  # frames: copied from a sidecar of the source; no label depends on them
                      "migrations")  # when and by what a store was rewritten in a newer schema


@dataclass
class ValidationReport:
    """Result of :func:`validate_store`: sound iff ``problems`` is empty."""

    path: Path
    problems: list[str] = field(default_factory=list)
    checks: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    """Result of :func:`verify_store`: sound iff ``mismatches`` is empty."""

    path: Path
    source: Path | None
    compared: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _values(arr: Any) -> np.ndarray:
    return np.asarray(arr[...])


def _in_set(x: np.ndarray, allowed: tuple[float, ...]) -> bool:
    return bool(np.isin(x, allowed).all())


def validate_store(path: str | Path) -> ValidationReport:
    """Check a store's structure (see the module docstring); never needs the source.

    Raises:
        FeedbackgenError: the path is not a readable store of a known schema version.
    """
    path = Path(path)
    data = open_store(path, lazy=True)
    rep = ValidationReport(path=path)

    def check(cond: bool, msg: str) -> bool:
        rep.checks += 1
        if not cond:
            rep.problems.append(msg)
        return cond

    has_oracle = data.oracle is not None
    for name, (dtype, attr, is_oracle) in schema_arrays(include_oracle=has_oracle).items():
        arr = getattr(data.oracle if is_oracle else data, attr)
        check(np.dtype(arr.dtype) == np.dtype(dtype), f"{name} has dtype {arr.dtype}, expected {dtype}")

    obs, nobs, act = data.observations, data.next_observations, data.actions
    N = int(obs.shape[0])
    E, S = data.n_episodes, data.n_segments
    P, M = int(data.pref_a.shape[0]), int(data.safety_segment.shape[0])
    K = int(data.thresholds.shape[0]) if len(data.thresholds.shape) == 1 else -1
    expected = {
        "transitions/observations": (N, obs.shape[1] if len(obs.shape) == 2 else -1),
        "transitions/next_observations": tuple(obs.shape),
        "transitions/actions": (N, act.shape[1] if len(act.shape) == 2 else -1),
        "transitions/episode": (N,), "transitions/terminations": (N,), "transitions/truncations": (N,),
        "episodes/start": (E,), "episodes/length": (E,),
        "segments/episode": (S,), "segments/start": (S,), "segments/length": (S,),
        "preferences/a": (P,), "preferences/b": (P,), "preferences/label": (P,), "preferences/prob": (P,),
        "safety/thresholds": (K,), "safety/segment": (M,), "safety/label": (M, K),
        "oracle/rewards": (N,), "oracle/costs": (N,), "oracle/episode_reward": (E,),
        "oracle/episode_cost": (E,), "oracle/segment_return": (S,), "oracle/segment_cost": (S,),
        "oracle/pref_label": (P,), "oracle/safety_label": (M, K),
    }
    shapes_ok = True
    for name, (_, attr, is_oracle) in schema_arrays(include_oracle=has_oracle).items():
        arr = getattr(data.oracle if is_oracle else data, attr)
        shapes_ok &= check(tuple(arr.shape) == expected[name],
                           f"{name} has shape {tuple(arr.shape)}, expected {expected[name]}")
    derived = data.next_observations_form == NEXT_OBS_DERIVED
    if derived:  # the stored part of the next observations: one row per episode
        final = data.final_next_observations
        check(np.dtype(final.dtype) == np.float32,
              f"{FINAL_NEXT_OBSERVATIONS} has dtype {final.dtype}, expected float32")
        want = (E, obs.shape[1] if len(obs.shape) == 2 else -1)
        shapes_ok &= check(tuple(final.shape) == want,
                           f"{FINAL_NEXT_OBSERVATIONS} has shape {tuple(final.shape)}, expected {want}")
    shapes_ok &= check(len(obs.shape) == 2 and len(act.shape) == 2, "observations/actions must be 2-D")
    if not shapes_ok:
        return rep  # index checks below would be meaningless

    ep_start, ep_len = _values(data.episode_start), _values(data.episode_length)
    check(E >= 1, "the store has no episodes")
    if E:
        contiguous = (ep_start[0] == 0 and (ep_len > 0).all()
                      and np.array_equal(ep_start[1:], ep_start[:-1] + ep_len[:-1])
                      and int(ep_start[-1] + ep_len[-1]) == N)
        if check(bool(contiguous), "episodes/start and episodes/length do not tile the transitions "
                                   "(episodes must be contiguous, non-empty and cover every step)"):
            check(np.array_equal(_values(data.episode), np.repeat(np.arange(E), ep_len)),
                  "transitions/episode does not match the episode table")

    seg_ep, seg_start, seg_len = _values(data.segment_episode), _values(data.segment_start), \
        _values(data.segment_length)
    segments_ok = False
    if check(bool(((seg_ep >= 0) & (seg_ep < E)).all()), "segments/episode has ids outside [0, episodes)") \
            and check(bool((seg_len >= 1).all()), "segments/length has values < 1"):
        inside = (seg_start >= ep_start[seg_ep]) & (seg_start + seg_len <= ep_start[seg_ep] + ep_len[seg_ep])
        bad = np.flatnonzero(~inside)
        segments_ok = check(bad.size == 0, f"{bad.size} segments are not inside their episode (first: "
                                           f"segment {bad[0] if bad.size else -1})")

    a, b = _values(data.pref_a), _values(data.pref_b)
    label, prob = _values(data.pref_label), _values(data.pref_prob)
    check(bool(((a >= 0) & (a < S) & (b >= 0) & (b < S)).all()),
          "preferences/a or preferences/b has segment ids outside [0, segments)")
    check(bool((a != b).all()), "a preference pair compares a segment with itself")
    check(_in_set(label, (0.0, 0.5, 1.0)), "preferences/label has values other than 0, 0.5 and 1")
    check(bool((np.isnan(prob) | ((prob >= 0) & (prob <= 1))).all()),
          "preferences/prob has values outside [0, 1] (NaN allowed)")

    th = _values(data.thresholds)
    check(bool(np.isfinite(th).all() and (th >= 0).all()), "safety/thresholds must be finite and >= 0")
    seg = _values(data.safety_segment)
    check(bool(((seg >= 0) & (seg < S)).all()), "safety/segment has segment ids outside [0, segments)")
    check(_in_set(_values(data.safety_label), (0, 1)), "safety/label has values other than 0 and 1")

    _check_optional(data, check, N=N, P=P, M=M, K=K)
    _check_split(data, check, P=P, M=M, E=E, S=S)

    # derived next observations are observations plus the final rows: check what is stored
    stored_next = ("final_next_observations", data.final_next_observations) if derived \
        else ("next_observations", nobs)
    for name, arr in (("observations", obs), stored_next, ("actions", act)):
        rows = int(arr.shape[0])
        finite = all(np.isfinite(np.asarray(arr[lo:lo + SCAN_CHUNK_ROWS])).all()
                     for lo in range(0, rows, SCAN_CHUNK_ROWS))
        check(finite, f"transitions/{name} has NaN or inf values")

    o = data.oracle
    if o is not None:
        rewards, costs = _values(o.rewards), _values(o.costs)
        if check(bool(np.isfinite(rewards).all() and np.isfinite(costs).all()),
                 "oracle/rewards or oracle/costs has NaN or inf values"):
            sums = (("reward", rewards, o.episode_reward), ("cost", costs, o.episode_cost))
            for nm, per_step, total in sums:
                check(np.allclose(episode_sums(per_step, ep_start), _values(total), rtol=1e-4, atol=1e-3),
                      f"oracle/episode_{nm} is not the episode sum of oracle/{nm}s")
            if segments_ok:
                csum = np.concatenate([[0.0], np.cumsum(rewards, dtype=np.float64)])
                seg_ret = csum[seg_start + seg_len] - csum[seg_start]
                check(np.allclose(seg_ret, _values(o.segment_return), rtol=1e-4, atol=1e-3),
                      "oracle/segment_return is not the reward sum of each segment")
        check(_in_set(_values(o.pref_label), (0.0, 0.5, 1.0)),
              "oracle/pref_label has values other than 0, 0.5 and 1")
        check(_in_set(_values(o.safety_label), (0, 1)), "oracle/safety_label has values other than 0 and 1")

    meta, quality = data.metadata, data.quality
    check(bool(STORE_ID_RE.match(data.store_id or "")),
          f"store id {data.store_id!r} is not of the form namespace/name-vN")
    for key, sub in REQUIRED_METADATA.items():
        if check(key in meta, f"metadata has no '{key}'"):
            for k in sub:
                check(isinstance(meta[key], dict) and k in meta[key], f"metadata '{key}' has no '{k}'")
    for key in REQUIRED_QUALITY:
        check(key in quality, f"quality summary has no '{key}'")
    if rep.ok:
        check(len(meta["obs_mean"]) == obs.shape[1] and len(meta["obs_std"]) == obs.shape[1],
              "metadata obs_mean/obs_std do not match the observation dimension")
        check(meta["source"]["transitions"] == N and meta["source"]["episodes"] == E,
              "metadata source transitions/episodes do not match the store")
        check(meta["preferences"]["n"] == P, "metadata preferences.n does not match preferences/label")
        check(meta["safety"]["n"] == M, "metadata safety.n does not match safety/label")
        check(np.allclose(np.asarray(meta["safety"]["thresholds"], float), th),
              "metadata safety.thresholds do not match safety/thresholds")
    return rep


def _check_optional(data: Any, check: Any, *, N: int, P: int, M: int, K: int) -> None:
    """Checks of the optional arrays (label sources, times, confidences, frames) when present."""
    present = {name: getattr(data, attr) for name, (_, attr) in optional_arrays().items()
               if getattr(data, attr) is not None}
    if not present:
        return
    for name, arr in present.items():
        dtype = optional_arrays()[name][0]
        check(np.dtype(arr.dtype) == np.dtype(dtype), f"{name} has dtype {arr.dtype}, expected {dtype}")
    sources = data.metadata.get("label_sources") if isinstance(data.metadata, dict) else None
    for group, rows in (("preferences", P), ("safety", M)):
        trio = [f"{group}/{x}" for x in ("source", "time", "confidence")]
        have = [n for n in trio if n in present]
        if not have:
            continue
        if not check(len(have) == 3, f"{group}: {', '.join(have)} present without "
                                     f"{', '.join(n for n in trio if n not in have)} (written together)"):
            continue
        if not all(check(tuple(present[n].shape) == (rows,),
                         f"{n} has shape {tuple(present[n].shape)}, expected {(rows,)}") for n in trio):
            continue
        ok_meta = check(isinstance(sources, list) and len(sources) > 0 and all(
            isinstance(s, dict) and isinstance(s.get("id"), str) and s.get("kind") in ("teacher", "human")
            for s in sources), "metadata label_sources must be a list of {id, kind: teacher|human} "
                               f"when {group}/source is present")
        if ok_meta and isinstance(sources, list):  # ok_meta says it is a list
            check(len({s["id"] for s in sources}) == len(sources), "metadata label_sources has repeated ids")
            src = _values(present[f"{group}/source"]).astype(np.int64)
            check(bool(((src >= 0) & (src < len(sources))).all()),
                  f"{group}/source has indices outside [0, {len(sources)}) (metadata label_sources)")
        t = _values(present[f"{group}/time"])
        check(bool((np.isnan(t) | np.isfinite(t)).all()), f"{group}/time has inf values (NaN allowed)")
        c = _values(present[f"{group}/confidence"])
        check(bool((np.isnan(c) | ((c >= 0) & (c <= 1))).all()),
              f"{group}/confidence has values outside [0, 1] (NaN allowed)")
    if "safety/single" in present:
        single = _values(present["safety/single"])
        shape_ok = check(tuple(single.shape) == (M,),
                         f"safety/single has shape {tuple(single.shape)}, expected {(M,)}")
        if shape_ok and M and K > 0:
            lab = _values(data.safety_label)[single.astype(bool)]
            check(bool((lab == lab[:, :1]).all()) if lab.size else True,
                  "safety/single rows must have the same label at every threshold")
    if "frames/index" in present or "frames/images" in present:
        if check("frames/index" in present and "frames/images" in present,
                 "frames/index and frames/images must be present together"):
            idx, img = present["frames/index"], present["frames/images"]
            F = int(idx.shape[0]) if len(idx.shape) == 1 else -1
            if check(len(img.shape) == 4 and int(img.shape[0]) == F and int(img.shape[3]) == 3,
                     f"frames/images has shape {tuple(img.shape)}, expected ({F}, h, w, 3)"):
                iv = _values(idx)
                check(bool(iv.size == 0 or ((np.diff(iv) > 0).all() and iv[0] >= 0 and iv[-1] < N)),
                      "frames/index must be strictly increasing transition indices in [0, transitions)")


def _check_split(data: Any, check: Any, *, P: int, M: int, E: int, S: int) -> None:
    """The validation split, when present: both arrays, 0/1 values, ``metadata.split`` naming the
    validation episodes, validation rows only on their segments, teacher training rows on none."""
    from feedbackgen.labels import TEACHER, label_sources, source_columns

    if not data.has_split:
        return
    if not check(data.pref_split is not None and data.safety_split is not None,
                 "preferences/split and safety/split must be present together"):
        return
    ok = True
    for name, arr, rows in (("preferences/split", data.pref_split, P),
                            ("safety/split", data.safety_split, M)):
        ok &= check(tuple(arr.shape) == (rows,), f"{name} has shape {tuple(arr.shape)}, expected {(rows,)}")
        ok &= check(_in_set(_values(arr), (0, 1)), f"{name} has values other than 0 and 1")
    meta = data.metadata.get("split") if isinstance(data.metadata, dict) else None
    val_eps = meta.get("val_episodes") if isinstance(meta, dict) else None
    if not check(isinstance(val_eps, list) and all(isinstance(e, int) and 0 <= e < E for e in val_eps),
                 "metadata split.val_episodes must list episode ids in [0, episodes) when preferences/split "
                 "is present") or not ok or not isinstance(meta, dict):  # a dict once val_episodes is a list
        return
    pv, sv = (_values(x).astype(bool) for x in (data.pref_split, data.safety_split))
    check(meta.get("n_val_pairs") == int(pv.sum()) and meta.get("n_val_safety") == int(sv.sum()),
          "metadata split.n_val_pairs / n_val_safety do not match preferences/split / safety/split")
    seg_ep = _values(data.segment_episode).astype(np.int64)
    a, b, seg = (_values(x).astype(np.int64) for x in (data.pref_a, data.pref_b, data.safety_segment))
    if not all(((x >= 0) & (x < S)).all() for x in (a, b, seg)):
        return  # reported above
    in_val = np.isin(seg_ep, np.asarray(val_eps, dtype=np.int64))
    try:  # rows of the synthetic teacher (a label file may name any segment; those are training rows)
        teacher = np.asarray([s["kind"] == TEACHER for s in label_sources(data)] + [False], bool)
        psrc, ssrc = source_columns(data)
        p_teacher, s_teacher = (teacher[np.where((x >= 0) & (x < teacher.size - 1), x, -1)]
                                for x in (psrc, ssrc))
    except (KeyError, TypeError, ValueError):  # damaged label_sources: reported by _check_optional
        return
    if p_teacher.shape != pv.shape or s_teacher.shape != sv.shape:
        return  # source arrays of the wrong length: reported by _check_optional
    check(bool((in_val[a[pv]] & in_val[b[pv]]).all() and in_val[seg[sv]].all()),
          "a validation row uses a segment outside the validation episodes (metadata split.val_episodes)")
    tp, ts = ~pv & p_teacher, ~sv & s_teacher
    check(not bool(in_val[a[tp]].any() or in_val[b[tp]].any() or in_val[seg[ts]].any()),
          "a training row uses a segment of a validation episode (metadata split.val_episodes)")


def _compare_rows(name: str, stored: Any, fresh: Any, dtype: str) -> bool:
    if tuple(stored.shape) != tuple(fresh.shape):
        return False
    n = int(stored.shape[0]) if stored.shape else 0
    step = SCAN_CHUNK_ROWS if len(stored.shape) else 1
    for lo in range(0, max(n, 1), step):
        s = np.asarray(stored[lo:lo + step] if stored.shape else stored[...], dtype=dtype)
        f = np.asarray(fresh[lo:lo + step] if fresh.shape else fresh[...], dtype=dtype)
        if not np.array_equal(s, f, equal_nan=s.dtype.kind == "f"):
            return False
    return True


def verify_store(path: str | Path, *, source: str | Path | None = None, progress: Any = None) -> VerifyReport:
    """Recompute a store from its recorded source and parameters and compare everything exactly.

    The source is ``source`` if given, else the recorded path, else the task's usual place
    (shipped file or DSRL cache; no download). Its SHA-256 must equal the recorded one.

    Raises:
        FeedbackgenError: the store cannot be opened, or the source cannot be found or read.
    """
    from feedbackgen.make import MakeConfig, build_feedback, open_source, source_record
    from feedbackgen.tasks import Task

    path = Path(path)
    data = open_store(path, lazy=True)
    meta = data.metadata
    try:
        task = Task.from_dict(meta["task"])
        recorded = meta["source"]
        cfg = MakeConfig.from_dict(meta["config"], source=None, out=None, overwrite=False, download=False)
    except (KeyError, TypeError) as exc:
        raise FeedbackgenError(f"{path}: metadata lacks what verify needs ({exc}); "
                               "run `feedbackgen validate` on it") from None
    if source is None and recorded.get("path") and Path(recorded["path"]).is_file():
        source = Path(recorded["path"])
    src_path, digest, traj = open_source(cfg, task, source=source, progress=progress)
    rep = VerifyReport(path=path, source=src_path)
    if digest != recorded.get("sha256"):
        traj.close()
        rep.mismatches.append(f"source {src_path} has SHA-256 {digest[:12]}…, the store was made from "
                              f"{str(recorded.get('sha256'))[:12]}…; pass the original file with --source")
        return rep
    with traj:
        fresh = build_feedback(cfg, task, traj, source_record(src_path, digest, traj))
        for name, (dtype, attr, is_oracle) in schema_arrays(include_oracle=data.oracle is not None).items():
            stored = getattr(data.oracle if is_oracle else data, attr)
            new = getattr(fresh.oracle if is_oracle else fresh, attr)
            if progress is not None:
                progress("comparing arrays", len(rep.compared), len(schema_arrays()))
            rep.compared.append(name)
            if name == "transitions/next_observations" and data.next_observations_form == NEXT_OBS_DERIVED:
                try:  # rebuilt from observations and the final rows; compared with the source's
                    same = _compare_rows(name, stored, new, dtype)
                except FeedbackgenError as exc:  # the episode table no longer fits the final rows
                    rep.mismatches.append(f"{name} cannot be derived ({exc})")
                    continue
                if not same:
                    rep.mismatches.append(f"{name} (derived from transitions/observations and "
                                          f"{FINAL_NEXT_OBSERVATIONS}) differs from the source's")
                continue
            if not _compare_rows(name, stored, new, dtype):
                rep.mismatches.append(f"{name} differs from the recomputed array")
        for name in ("preferences/split", "safety/split"):  # the validation split, when either has one
            dtype, attr = optional_arrays()[name]
            stored, new = getattr(data, attr), getattr(fresh, attr)
            if stored is None and new is None:
                continue
            rep.compared.append(name)
            if stored is None or new is None:
                rep.mismatches.append(f"{name} is {'missing' if stored is None else 'present'}, the "
                                      f"recomputed store has {'one' if stored is None else 'none'}")
            elif not _compare_rows(name, stored, new, dtype):
                rep.mismatches.append(f"{name} differs from the recomputed array")
    rep.compared.append("store_id")
    stripped = meta.get("stripped")
    own_id = stripped.get("from_store_id") if isinstance(stripped, dict) else data.store_id
    if own_id != fresh.store_id:
        rep.mismatches.append(f"store id {own_id} differs from the recomputed {fresh.store_id}")
    rep.compared.append("quality")
    if jsonable(data.quality) != jsonable(fresh.quality):
        rep.mismatches.append("the quality summary differs from the recomputed one")
    fresh_meta = jsonable(fresh.metadata)
    if "schema_version" in meta:  # the layout the store was written in, not its content
        rep.compared.append("metadata.schema_version")
        if meta["schema_version"] != data.schema_version:
            rep.mismatches.append(f"metadata 'schema_version' ({meta['schema_version']!r}) differs from the "
                                  f"store's schema version {data.schema_version}")
    for key in sorted(set(fresh_meta) | set(meta)):
        if key in _VOLATILE_METADATA or key == "schema_version":
            continue
        rep.compared.append(f"metadata.{key}")
        if fresh_meta.get(key) != meta.get(key):
            rep.mismatches.append(f"metadata '{key}' differs from the recomputed value")
    return rep
