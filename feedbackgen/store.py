"""The feedback store: one self-contained Zarr v3 directory (or a stored zip of one).

Layout (schema version 2); every array name below is part of the format::

    /                          attrs: schema_version, store_id, metadata{...}, quality{...},
                                      next_observations ("derived" | "explicit"), has_oracle
    transitions/observations   (N, obs) float32
    transitions/final_next_observations (E, obs) float32   only when next_observations is "derived":
                                  the next observation of each episode's last transition
    transitions/next_observations (N, obs) float32         only when next_observations is "explicit"
    transitions/actions        (N, act) float32
    transitions/episode        (N,) int32     episode index of each transition
    transitions/terminations   (N,) bool      DSRL ``terminals``
    transitions/truncations    (N,) bool      DSRL ``timeouts``
    episodes/start             (E,) int64     global index of the first transition
    episodes/length            (E,) int64
    segments/episode           (S,) int32
    segments/start             (S,) int64     global transition index of the segment's first step
    segments/length            (S,) int32
    preferences/a, preferences/b (P,) int64   segment ids
    preferences/label          (P,) float32   y = P(b ≻ a): 1 b preferred, 0 a preferred, 0.5 equal
    preferences/prob           (P,) float32   the teacher's P(b ≻ a) where it has one, else NaN
    safety/thresholds          (K,) float32   episode cost thresholds κ
    safety/segment             (M,) int64     segment ids
    safety/label               (M, K) int8    1 safe, 0 unsafe, per threshold
    oracle/...                 ground truth, removed by ``feedbackgen strip``:
        rewards (N,), costs (N,), episode_reward (E,), episode_cost (E,),
        segment_return (S,), segment_cost (S,), pref_label (P,), safety_label (M, K)

Next observations (schema version 2). Inside an episode ``next_observations[i]`` is
``observations[i + 1]``, so a store written by :func:`write_store` keeps only each episode's last
one, in ``transitions/final_next_observations`` (row ``e`` = the next observation of the last step
of episode ``e``, whose index is ``episodes/start[e] + episodes/length[e] - 1``), and the root
attribute ``next_observations`` is ``"derived"``. The writer checks this bit for bit (float32)
while it streams the observations; if any row inside an episode differs from the next observation
(some recorded datasets have such rows), or the episode table cannot carry the derivation, it
writes the full ``transitions/next_observations`` array as in schema 1 and the attribute is
``"explicit"``. Readers see the same ``FeedbackData.next_observations`` either way: for a
derived store it is rebuilt on slicing (:class:`DerivedNextObservations`), or in memory when
opened eagerly. Schema version 1 (no ``next_observations`` attribute, always the explicit
array) is still read; every write produces schema version 2, and :func:`migrate_store`
(``feedbackgen migrate``) rewrites a schema-1 store as schema 2 with the same content and id.

Optional arrays (schema versions 1 and 2; a store without them is read as before):

    preferences/source       (P,) int16    index into metadata ``label_sources``
    preferences/time         (P,) float64  unix time of the answer, NaN if unknown
    preferences/confidence   (P,) float32  annotator confidence in [0, 1], NaN if not given
    safety/source, safety/time, safety/confidence   the same per safety row, (M,)
    safety/single            (M,) bool     True: one judgement for the segment, applied to every
                                           threshold; False: one label per threshold
    preferences/split        (P,) int8     1: validation row, 0: training row (``make --val-fraction``)
    safety/split             (M,) int8     the same per safety row
    frames/index             (F,) int64    transition index each frame shows (strictly increasing)
    frames/images            (F, h, w, 3) uint8  RGB frames (``feedbackgen collect --record-frames``)

``metadata.label_sources`` is a list of ``{"id": "teacher:oracle+mistake" | "human:alice",
"kind": "teacher" | "human"}``. A store without ``preferences/source`` has every label from the
synthetic teacher its metadata records (see :mod:`feedbackgen.labels`). The source, time and
confidence arrays of a channel are written together or not at all.

Validation split: ``preferences/split`` and ``safety/split`` are written together, with
``metadata.split`` (``val_fraction``, ``seed``, ``rng_streams``, ``val_episodes``, counts; see
:func:`feedbackgen.make.split_record`). A store without them (made before the split existed, or
with ``--val-fraction 0``) has no validation set: every row is a training row
(:func:`split_columns`). Validation rows use segments of ``val_episodes`` only; rows added by
``feedbackgen import-labels`` are training rows.

Writes are atomic (built in a hidden temporary sibling, then renamed; an existing store is swapped
for the new one in one step where the system allows); an existing store is never replaced unless
``overwrite=True``; readers refuse unknown schema versions. Commands that turn a store into another
(strip, migrate) open it lazily, change the :class:`FeedbackData` and write it with
:func:`rewrite_store`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from feedbackgen._io import git_commit, jsonable, replace_dir
from feedbackgen.errors import FeedbackgenError

SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = (1, 2)
TRANSITION_CHUNK_ROWS = 65_536
NEXT_OBS_DERIVED = "derived"
NEXT_OBS_EXPLICIT = "explicit"
FINAL_NEXT_OBSERVATIONS = "transitions/final_next_observations"
_OBSERVATION_ARRAYS = ("transitions/observations", "transitions/next_observations")

# (group, array) -> (dtype, field name on FeedbackData / OracleData)
_MAIN_ARRAYS: dict[str, tuple[str, str]] = {
    "transitions/observations": ("float32", "observations"),
    "transitions/next_observations": ("float32", "next_observations"),
    "transitions/actions": ("float32", "actions"),
    "transitions/episode": ("int32", "episode"),
    "transitions/terminations": ("bool", "terminations"),
    "transitions/truncations": ("bool", "truncations"),
    "episodes/start": ("int64", "episode_start"),
    "episodes/length": ("int64", "episode_length"),
    "segments/episode": ("int32", "segment_episode"),
    "segments/start": ("int64", "segment_start"),
    "segments/length": ("int32", "segment_length"),
    "preferences/a": ("int64", "pref_a"),
    "preferences/b": ("int64", "pref_b"),
    "preferences/label": ("float32", "pref_label"),
    "preferences/prob": ("float32", "pref_prob"),
    "safety/thresholds": ("float32", "thresholds"),
    "safety/segment": ("int64", "safety_segment"),
    "safety/label": ("int8", "safety_label"),
}
_ORACLE_ARRAYS: dict[str, tuple[str, str]] = {
    "oracle/rewards": ("float32", "rewards"),
    "oracle/costs": ("float32", "costs"),
    "oracle/episode_reward": ("float32", "episode_reward"),
    "oracle/episode_cost": ("float32", "episode_cost"),
    "oracle/segment_return": ("float32", "segment_return"),
    "oracle/segment_cost": ("float32", "segment_cost"),
    "oracle/pref_label": ("float32", "pref_label"),
    "oracle/safety_label": ("int8", "safety_label"),
}
# optional arrays: (group, array) -> (dtype, field name on FeedbackData); absent when the field is None
_OPTIONAL_ARRAYS: dict[str, tuple[str, str]] = {
    "preferences/source": ("int16", "pref_source"),
    "preferences/time": ("float64", "pref_time"),
    "preferences/confidence": ("float32", "pref_confidence"),
    "safety/source": ("int16", "safety_source"),
    "safety/time": ("float64", "safety_time"),
    "safety/confidence": ("float32", "safety_confidence"),
    "safety/single": ("bool", "safety_single"),
    "preferences/split": ("int8", "pref_split"),
    "safety/split": ("int8", "safety_split"),
    "frames/index": ("int64", "frame_index"),
    "frames/images": ("uint8", "frame_images"),
}


@dataclass
class OracleData:
    """Ground truth kept beside the labels (absent from a stripped store)."""

    rewards: Any
    costs: Any
    episode_reward: Any
    episode_cost: Any
    segment_return: Any
    segment_cost: Any
    pref_label: Any
    safety_label: Any


@dataclass
class FeedbackData:
    """Everything a store holds. Arrays are numpy arrays, or (when written or opened lazily) any
    array-like with ``shape``, ``dtype`` and slicing (h5py datasets, zarr arrays).

    ``next_observations_form`` and ``final_next_observations`` say how an opened store holds
    ``next_observations`` (``"derived"``: only ``final_next_observations`` is stored, see the
    module docstring); :func:`write_store` ignores them and decides the form itself.
    """

    observations: Any
    next_observations: Any
    actions: Any
    episode: Any
    terminations: Any
    truncations: Any
    episode_start: Any
    episode_length: Any
    segment_episode: Any
    segment_start: Any
    segment_length: Any
    pref_a: Any
    pref_b: Any
    pref_label: Any
    pref_prob: Any
    thresholds: Any
    safety_segment: Any
    safety_label: Any
    oracle: OracleData | None
    metadata: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)
    store_id: str = ""
    schema_version: int = SCHEMA_VERSION
    path: Path | None = None
    pref_source: Any = None
    pref_time: Any = None
    pref_confidence: Any = None
    safety_source: Any = None
    safety_time: Any = None
    safety_confidence: Any = None
    safety_single: Any = None
    pref_split: Any = None
    safety_split: Any = None
    frame_index: Any = None
    frame_images: Any = None
    next_observations_form: str = NEXT_OBS_EXPLICIT
    final_next_observations: Any = None

    @property
    def n_transitions(self) -> int:
        return int(self.observations.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(self.episode_start.shape[0])

    @property
    def n_segments(self) -> int:
        return int(self.segment_start.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def has_split(self) -> bool:
        """Whether the store records a validation split (``preferences/split``, ``safety/split``)."""
        return self.pref_split is not None or self.safety_split is not None

    def threshold_index(self, threshold: float) -> int:
        """Column of ``safety_label`` for threshold κ.

        Raises:
            FeedbackgenError: the store has no labels for that threshold.
        """
        th = np.asarray(self.thresholds[:], dtype=np.float64)
        hits = np.flatnonzero(np.isclose(th, float(threshold)))
        if hits.size == 0:
            have = ", ".join(f"{t:g}" for t in th)
            raise FeedbackgenError(f"threshold {threshold:g} is not in the store (it has {have}); "
                                   "pick one of those or remake the store with that threshold")
        return int(hits[0])


def split_columns(data: FeedbackData) -> tuple[np.ndarray, np.ndarray]:
    """``(pref_val, safety_val)``: (P,) and (M,) bool, True for a validation row; all False for a
    store without a split (every row is a training row)."""
    P, M = int(data.pref_a.shape[0]), int(data.safety_segment.shape[0])
    pref = np.zeros(P, bool) if data.pref_split is None else np.asarray(data.pref_split[...]).astype(bool)
    saf = np.zeros(M, bool) if data.safety_split is None else np.asarray(data.safety_split[...]).astype(bool)
    return pref, saf


def _is_zip(path: Path) -> bool:
    return path.suffix == ".zip"


def _compressor():
    """Blosc LZ4 with byte shuffle: measured on 1M × 88 float32 (benchmarks/README.md), it writes
    about 1.6–1.8× faster than zarr's default Zstd and compresses smooth observations better."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def _create_array(group, name: str, shape: tuple[int, ...], dtype: str):
    """Create ``name`` in ``group`` with the store's chunking (about 4 MB per chunk of rows)."""
    rows = TRANSITION_CHUNK_ROWS
    if len(shape) == 2 and shape[1] > 0:
        rows = max(1024, min(rows, (4 << 20) // (4 * shape[1])))
    elif len(shape) > 2:  # images: about 1 MB per chunk
        row_bytes = max(1, int(np.prod(shape[1:])) * np.dtype(dtype).itemsize)
        rows = max(1, (1 << 20) // row_bytes)
    chunks = (max(1, min(rows, shape[0] if shape[0] else 1)),) + shape[1:]
    return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, compressors=_compressor())


def _copy_array(group, name: str, src, dtype: str) -> None:
    """Create ``name`` in ``group`` and copy ``src`` into it in row chunks (streams h5py/zarr)."""
    src_shape = tuple(int(s) for s in src.shape)
    arr = _create_array(group, name, src_shape, dtype)
    n, rows = src_shape[0], arr.chunks[0]
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        arr[lo:hi] = np.asarray(src[lo:hi], dtype=dtype)


def episode_ends(episode_start: Any, episode_length: Any, n_transitions: int) -> np.ndarray | None:
    """Index of each episode's last transition, or None when they cannot carry derived next
    observations (not strictly increasing, outside ``[0, N)``, or the last is not ``N - 1``)."""
    start = np.asarray(episode_start[...], dtype=np.int64).reshape(-1)
    length = np.asarray(episode_length[...], dtype=np.int64).reshape(-1)
    if start.shape != length.shape or start.size == 0 or n_transitions < 1:
        return None
    ends = start + length - 1
    if ends[0] < 0 or ends[-1] != n_transitions - 1 or (np.diff(ends) <= 0).any():
        return None
    return ends


def _same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: whether two float32 blocks are bitwise identical (NaN payloads and -0.0 count)."""
    return (a.view(np.uint32) == b.view(np.uint32)).all(axis=1)


def _write_observations(group, data: FeedbackData) -> str:
    """Write ``transitions/observations`` and the next observations; return the form used.

    One pass streams the observations and the next observations together in row chunks and
    checks bit for bit that ``next_observations[i] == observations[i + 1]`` wherever ``i`` is not
    the last step of its episode, keeping the last steps' rows. If that holds everywhere, only
    those rows are written (``transitions/final_next_observations``, ``"derived"``); otherwise
    the next observations are streamed again into the full array (``"explicit"``).
    """
    obs, nobs = data.observations, data.next_observations
    shape = tuple(int(s) for s in obs.shape)
    ends = None
    if len(shape) == 2 and tuple(int(s) for s in nobs.shape) == shape:
        ends = episode_ends(data.episode_start, data.episode_length, shape[0])
    if ends is None:
        _copy_array(group, "transitions/observations", obs, "float32")
        _copy_array(group, "transitions/next_observations", nobs, "float32")
        return NEXT_OBS_EXPLICIT
    n = shape[0]
    is_end = np.zeros(n, dtype=bool)
    is_end[ends] = True
    final = np.empty((ends.size, shape[1]), dtype=np.float32)
    arr = _create_array(group, "transitions/observations", shape, "float32")
    rows = arr.chunks[0]
    derivable = True
    carry = None  # next_observations[lo - 1] when lo - 1 is not an episode's last step
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        o = np.ascontiguousarray(obs[lo:hi], dtype=np.float32)
        arr[lo:hi] = o
        nx = np.ascontiguousarray(nobs[lo:hi], dtype=np.float32)
        k0, k1 = np.searchsorted(ends, (lo, hi))
        final[k0:k1] = nx[ends[k0:k1] - lo]
        if derivable:
            if carry is not None and not _same_bits(carry[None], o[:1])[0]:
                derivable = False
            elif hi - lo > 1 and not (_same_bits(nx[:-1], o[1:]) | is_end[lo:hi - 1]).all():
                derivable = False
            carry = None if is_end[hi - 1] else nx[-1].copy()
    if derivable:
        out = _create_array(group, FINAL_NEXT_OBSERVATIONS, final.shape, "float32")
        out[...] = final
        return NEXT_OBS_DERIVED
    _copy_array(group, "transitions/next_observations", nobs, "float32")
    return NEXT_OBS_EXPLICIT


def write_store(path: str | Path, data: FeedbackData, *, overwrite: bool = False) -> Path:
    """Write ``data`` as a store at ``path``, atomically.

    The store is built in a hidden sibling directory and renamed into place only when complete,
    so an interrupted write leaves nothing under the final name. It is always written in the
    current schema version; ``next_observations`` is stored derived where it can be (see the
    module docstring), and a ``schema_version`` entry in ``data.metadata`` is set to it.

    Raises:
        FeedbackgenError: ``path`` exists and ``overwrite`` is false, or it is not writable.
    """
    import zarr

    path = Path(path)
    if _is_zip(path):
        raise FeedbackgenError(f"{path}: write a directory store, then `feedbackgen publish` it to a zip")
    if path.exists() and not overwrite:
        raise FeedbackgenError(f"{path} already exists; pass --overwrite to replace it "
                               "or choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        root = zarr.open_group(store=str(tmp), mode="w-", zarr_format=3)
        form = _write_observations(root, data)
        for name, (dtype, attr) in _MAIN_ARRAYS.items():
            if name not in _OBSERVATION_ARRAYS:
                _copy_array(root, name, getattr(data, attr), dtype)
        if data.oracle is not None:
            for name, (dtype, attr) in _ORACLE_ARRAYS.items():
                _copy_array(root, name, getattr(data.oracle, attr), dtype)
        for name, (dtype, attr) in _OPTIONAL_ARRAYS.items():
            if getattr(data, attr) is not None:
                _copy_array(root, name, getattr(data, attr), dtype)
        metadata = data.metadata
        if isinstance(metadata, dict) and "schema_version" in metadata:
            metadata = {**metadata, "schema_version": SCHEMA_VERSION}
        root.attrs.update(jsonable({
            "schema_version": SCHEMA_VERSION,
            "store_id": data.store_id,
            "metadata": metadata,
            "quality": data.quality,
            "has_oracle": data.oracle is not None,
            "next_observations": form,
        }))
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def rewrite_store(data: FeedbackData, out: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """Write an opened store again, in the current schema: to ``out``, or over itself.

    The one path by which a command turns a store into another (``feedbackgen strip``,
    ``feedbackgen migrate``): open the store (lazily), change what the command changes on the
    :class:`FeedbackData`, and pass it here. Every array is streamed by :func:`write_store` into
    a temporary sibling, which takes the name only when complete; in place (``out`` None) the
    store being read stays under its name until then.

    Args:
        data: a store opened by :func:`open_store` (``data.path`` is where it lies).
        out: a new directory store; None replaces ``data.path`` itself.
        overwrite: replace an existing ``out``.

    Raises:
        FeedbackgenError: in place on a published zip, ``out`` is the input store, or ``out``
            exists and ``overwrite`` is false.
    """
    if data.path is None:
        raise ValueError("rewrite_store needs a FeedbackData opened by open_store (data.path is None)")
    src = Path(data.path)
    if out is None:
        if _is_zip(src):
            raise FeedbackgenError(f"{src} is a published zip and cannot be rewritten in place; "
                                   "pass --out NEW.zarr")
        return write_store(src, data, overwrite=True)
    out = Path(out)
    if out.resolve() == src.resolve():
        raise FeedbackgenError(f"--out {out} is the input store; choose another path")
    return write_store(out, data, overwrite=overwrite)


def _pid_running(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the ``.NAME.tmp-PID-*`` siblings of ``path`` whose writer process is gone.

    A writer killed hard (SIGKILL, power loss) cannot remove its temporary directory; the next
    :func:`write_store` to the same name calls this, so such leftovers never pile up. Directories
    of a live PID (a concurrent writer, or this process) are left alone. The PID test is local to
    this machine: do not let writers on two hosts write the same name in one shared folder.

    Returns:
        The directories removed.
    """
    path = Path(path)
    prefix = f".{path.name}.tmp-"
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []
    removed = []
    for p in candidates:
        pid, sep, rest = p.name[len(prefix):].partition("-")
        if not (pid.isdigit() and sep and rest) or int(pid) == os.getpid() or _pid_running(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


_READ_ERRORS = (RuntimeError, ValueError, OSError)  # what zarr/numcodecs raise on damaged chunks


class _CheckedArray:
    """A store array read on slicing (``open_store(lazy=True)``) whose read errors become one line.

    A damaged chunk makes the codecs raise (``RuntimeError: Zstd decompression error``, a
    ``ValueError`` on reshape, ...) wherever the array is sliced; this turns them into a
    :class:`FeedbackgenError` naming the store and the array. Everything else is the zarr array's.
    """

    __slots__ = ("_array", "_name", "_path")

    def __init__(self, array: Any, name: str, path: Path) -> None:
        self._array, self._name, self._path = array, name, path

    def __getitem__(self, key: Any) -> Any:
        try:
            return self._array[key]
        except _READ_ERRORS as exc:
            reason = (str(exc).splitlines() or [""])[0]
            raise FeedbackgenError(f"{self._path}: array '{self._name}' cannot be read "
                                   f"({type(exc).__name__}: {reason}); the store is damaged, remake it "
                                   "with `feedbackgen make`") from None

    def __setitem__(self, key: Any, value: Any) -> None:
        self._array[key] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)

    def __len__(self) -> int:
        return len(self._array)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._array, name)


class DerivedNextObservations:
    """``next_observations`` of a store that keeps only each episode's last one (schema 2, derived).

    Row ``i`` is ``observations[i + 1]``, except at the last step of episode ``e``, where it is
    ``final_next_observations[e]``. Read on slicing, like the other lazy arrays: a slice of rows
    reads the matching observations (one row more) and the final rows of the episodes that end
    inside it. Supports ``shape``, ``dtype``, ``len()``, ``numpy.asarray`` and numpy-style keys
    (row slices, integers, index arrays and masks, optionally followed by column keys).
    """

    def __init__(self, observations: Any, final: Any, episode_start: Any, episode_length: Any,
                 path: Path | None = None) -> None:
        self._obs, self._final = observations, final
        self._episode_start, self._episode_length = episode_start, episode_length
        self._path = path
        self._ends: np.ndarray | None = None
        self.shape = tuple(int(x) for x in observations.shape)
        self.dtype = np.dtype("float32")
        self.ndim = len(self.shape)

    @property
    def final(self) -> Any:
        """The stored ``transitions/final_next_observations`` array."""
        return self._final

    def ends(self) -> np.ndarray:
        """Index of each episode's last transition (checked against the stored final rows).

        Raises:
            FeedbackgenError: the episode table and ``final_next_observations`` do not fit.
        """
        if self._ends is None:
            n = self.shape[0] if self.shape else 0
            ends = episode_ends(self._episode_start, self._episode_length, n)
            final_shape = tuple(int(x) for x in self._final.shape)
            if ends is None or self.ndim != 2 or final_shape != (ends.size, self.shape[1]):
                where = f"{self._path}: " if self._path is not None else ""
                raise FeedbackgenError(
                    f"{where}{FINAL_NEXT_OBSERVATIONS} {final_shape} does not fit the episode table "
                    "(episodes must end in increasing order at the last transition, one row each); "
                    "the store is damaged, remake it with `feedbackgen make`")
            self._ends = ends
        return self._ends

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` (``0 <= lo <= hi <= N``)."""
        dim = self.shape[1]
        if hi <= lo:
            return np.empty((0, dim), dtype=np.float32)
        ends = self.ends()
        top = min(hi + 1, self.shape[0])
        out = np.empty((hi - lo, dim), dtype=np.float32)
        out[:top - lo - 1] = np.asarray(self._obs[lo + 1:top], dtype=np.float32)
        k0, k1 = (int(k) for k in np.searchsorted(ends, (lo, hi)))
        if k1 > k0:
            out[ends[k0:k1] - lo] = np.asarray(self._final[k0:k1], dtype=np.float32)
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        rows, rest = (key[0], key[1:]) if key else (slice(None), ())
        n = self.shape[0]
        if rows is Ellipsis:
            rows = slice(None)
        if isinstance(rows, (int, np.integer)):
            i = int(rows) + n if int(rows) < 0 else int(rows)
            if not 0 <= i < n:
                raise IndexError(f"index {int(rows)} is out of bounds for axis 0 with size {n}")
            return self._rows(i, i + 1)[0][rest] if rest else self._rows(i, i + 1)[0]
        elif isinstance(rows, slice) and rows.indices(n)[2] == 1:
            lo, hi, _ = rows.indices(n)
            out = self._rows(lo, max(lo, hi))
        else:
            idx = np.arange(n)[rows]
            out = (self._rows(int(idx.min()), int(idx.max()) + 1)[idx - idx.min()] if idx.size
                   else np.empty((0, self.shape[1]), dtype=np.float32))
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)

    def __len__(self) -> int:
        return self.shape[0]


def open_store(path: str | Path, *, lazy: bool = False) -> FeedbackData:
    """Open a store (directory or published zip) and check its schema version.

    Args:
        path: the store directory, or a ``.zip`` made by ``feedbackgen publish``.
        lazy: return zarr arrays (read on slicing) instead of loading everything into memory.

    Raises:
        FeedbackgenError: missing path, not a store, unknown schema version, or missing arrays.
    """
    path = Path(path)
    root, attrs = _open_group(path)
    version = attrs.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise FeedbackgenError(f"{path} has schema version {version!r}, which this feedbackgen "
                               f"({'/'.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}) cannot read; "
                               "upgrade the toolkit or remake the store")

    def get(name: str) -> Any:
        checked = _CheckedArray(_get_array(root, name, path), name, path)
        return checked if lazy else checked[...]

    form = attrs.get("next_observations", NEXT_OBS_EXPLICIT) if version >= 2 else NEXT_OBS_EXPLICIT
    if form not in (NEXT_OBS_DERIVED, NEXT_OBS_EXPLICIT):
        raise FeedbackgenError(f"{path} has next_observations form {form!r} (expected "
                               f"{NEXT_OBS_DERIVED!r} or {NEXT_OBS_EXPLICIT!r}); the store is damaged, "
                               "remake it with `feedbackgen make`")
    derived = form == NEXT_OBS_DERIVED
    values = {attr: get(name) for name, (_, attr) in _MAIN_ARRAYS.items()
              if not (derived and name == "transitions/next_observations")}
    if derived:
        final = _CheckedArray(_get_array(root, FINAL_NEXT_OBSERVATIONS, path), FINAL_NEXT_OBSERVATIONS, path)
        view = DerivedNextObservations(_CheckedArray(root["transitions/observations"],
                                                     "transitions/observations", path),
                                       final, values["episode_start"], values["episode_length"], path)
        values["next_observations"] = view if lazy else view[...]
        values["final_next_observations"] = final if lazy else final[...]
    values["next_observations_form"] = form
    for name, (_, attr) in _OPTIONAL_ARRAYS.items():
        group, _, leaf = name.partition("/")
        try:
            present = leaf in root[group]
        except KeyError:
            present = False
        if present:
            values[attr] = get(name)
    oracle = None
    if attrs.get("has_oracle", False):
        oracle = OracleData(**{attr: get(name) for name, (_, attr) in _ORACLE_ARRAYS.items()})
    return FeedbackData(**values, oracle=oracle, metadata=attrs.get("metadata", {}),
                        quality=attrs.get("quality", {}), store_id=attrs.get("store_id", ""),
                        schema_version=int(version), path=path)


def _open_group(path: Path) -> tuple[Any, dict]:
    """The root group of the store at ``path`` (read-only) and its attributes.

    Raises:
        FeedbackgenError: ``path`` does not exist or is not a Zarr group.
    """
    import zarr

    if not path.exists():
        raise FeedbackgenError(f"store {path} does not exist; make one with `feedbackgen make`")
    try:
        if _is_zip(path):
            store = zarr.storage.ZipStore(str(path), mode="r")
            root = zarr.open_group(store=store, mode="r")
        else:
            root = zarr.open_group(store=str(path), mode="r")
        return root, dict(root.attrs)
    except Exception as exc:  # zarr raises several types for "not a group"
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise FeedbackgenError(f"{path} is not a feedback store ({detail})") from None


def _get_array(root: Any, name: str, path: Path) -> Any:
    try:
        return root[name]
    except KeyError:
        raise FeedbackgenError(f"{path} is missing array '{name}'; the store is damaged, "
                               "remake it with `feedbackgen make`") from None


def array_names(include_oracle: bool = True) -> list[str]:
    """Every array path of the schema as :class:`FeedbackData` exposes it (``transitions/
    next_observations`` included, whether it is stored or derived)."""
    names = list(_MAIN_ARRAYS)
    if include_oracle:
        names += list(_ORACLE_ARRAYS)
    return names


def optional_arrays() -> dict[str, tuple[str, str]]:
    """The optional arrays: ``path -> (dtype, field name on FeedbackData)``."""
    return dict(_OPTIONAL_ARRAYS)


def main_fields() -> list[str]:
    return [f.name for f in fields(FeedbackData)]


def schema_arrays(include_oracle: bool = True) -> dict[str, tuple[str, str, bool]]:
    """Every array of the schema: ``path -> (dtype, field name, is_oracle)`` (used by verify/strip).

    The field name is the attribute on :class:`FeedbackData` (or on :class:`OracleData` when
    ``is_oracle``). ``transitions/next_observations`` is listed for every store: in a store whose
    next observations are derived it names :class:`DerivedNextObservations`, not a stored array.
    """
    out = {name: (dtype, attr, False) for name, (dtype, attr) in _MAIN_ARRAYS.items()}
    if include_oracle:
        out.update({name: (dtype, attr, True) for name, (dtype, attr) in _ORACLE_ARRAYS.items()})
    return out


# ------------------------------------------------------------------------------------------------
# migration between schema versions

#: root attributes of a store (schema versions 1 and 2); anything else is unknown to this toolkit
ROOT_ATTRIBUTES = ("schema_version", "store_id", "metadata", "quality", "has_oracle", "next_observations")


@dataclass
class Migration:
    """What :func:`migrate_store` did.

    Attributes:
        path: the store in the current schema (the input itself when nothing had to be done).
        store_id: its id (a migration keeps it).
        from_version: the schema version the input had.
        to_version: the schema version of ``path`` (:data:`SCHEMA_VERSION`).
        next_observations: how ``path`` holds the next observations (``"derived"``/``"explicit"``).
    """

    path: Path
    store_id: str
    from_version: int
    to_version: int
    next_observations: str

    @property
    def changed(self) -> bool:
        """False when the input was already at the current version (nothing was written)."""
        return self.from_version != self.to_version


def _unknown_content(path: Path, data: FeedbackData) -> list[str]:
    """Arrays and attributes of the store at ``path`` that a rewrite of ``data`` would not carry."""
    import zarr

    root, attrs = _open_group(path)
    expected = {name for name, (_, attr) in _OPTIONAL_ARRAYS.items() if getattr(data, attr) is not None}
    expected |= set(_MAIN_ARRAYS)
    if data.next_observations_form == NEXT_OBS_DERIVED:
        expected = (expected - {"transitions/next_observations"}) | {FINAL_NEXT_OBSERVATIONS}
    if data.oracle is not None:
        expected |= set(_ORACLE_ARRAYS)
    found = [f"root attribute '{k}'" for k in sorted(set(attrs) - set(ROOT_ATTRIBUTES))]
    for name, node in sorted(root.members(max_depth=None), key=lambda m: m[0]):
        if not isinstance(node, zarr.Group) and name not in expected:
            found.append(f"array '{name}'")
        if dict(node.attrs):
            found.append(f"attributes of '{name}'")
    return found


def migrate_store(path: str | Path, out: str | Path | None = None, *, overwrite: bool = False) -> Migration:
    """Rewrite a store of an older schema version in the current one (``feedbackgen migrate``).

    Every array keeps its values (bit for bit) and dtype, every attribute its value, the oracle
    group and the label sources included; only the layout changes (schema 1 -> 2: the next
    observations are stored derived where the rows allow it, see the module docstring) and the
    version fields (root ``schema_version``, ``metadata.schema_version``). ``metadata.migrations``
    gets one record ``{from_schema_version, to_schema_version, toolkit_version, git_commit, time}``.
    It goes through :func:`rewrite_store`, the same path as ``feedbackgen strip``.

    The store id is kept. It names the content (source hash and parameters, ``-vN`` counting label
    versions), which a migration does not change, so ``feedbackgen verify`` and the runs that
    recorded the id still match; ``strip`` (removes the oracle) and ``import-labels`` (adds labels)
    change the content and so the id.

    A store already at the current version is left alone (``out`` is not written). A store that
    holds an array or attribute the current schema has no place for is refused before anything is
    written, so a migration never drops data.

    Args:
        path: the store (a directory; a published ``.zip`` only with ``out``).
        out: write the migrated store here and leave ``path`` untouched; None: replace ``path``
            (built in a temporary sibling, then swapped in atomically, see :func:`_replace`).
        overwrite: replace an existing ``out``.

    Raises:
        FeedbackgenError: missing, damaged or unreadable store, unknown schema version, content
            the current schema cannot hold, ``out`` is the input or exists without ``overwrite``.
    """
    from datetime import UTC, datetime

    from feedbackgen import __version__

    path = Path(path)
    data = open_store(path, lazy=True)
    version = data.schema_version
    if version == SCHEMA_VERSION:
        return Migration(path=path, store_id=data.store_id, from_version=version, to_version=version,
                         next_observations=data.next_observations_form)
    unknown = _unknown_content(path, data)
    if unknown:
        raise FeedbackgenError(f"{path} holds {', '.join(unknown)}, which schema {SCHEMA_VERSION} has no "
                               "place for; migrating would drop it, so nothing was changed (remove it, "
                               "or remake the store with `feedbackgen make`)")
    meta = data.metadata
    history = meta.get("migrations", []) if isinstance(meta, dict) else None
    if not isinstance(history, list):
        raise FeedbackgenError(f"{path}: metadata is not a mapping with a list 'migrations'; the store "
                               "is damaged, remake it with `feedbackgen make`")
    data.metadata = {**meta, "migrations": [*history, {
        "from_schema_version": version, "to_schema_version": SCHEMA_VERSION,
        "toolkit_version": __version__, "git_commit": git_commit(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }]}
    written = rewrite_store(data, out, overwrite=overwrite)
    return Migration(path=written, store_id=data.store_id, from_version=version, to_version=SCHEMA_VERSION,
                     next_observations=open_store(written, lazy=True).next_observations_form)
