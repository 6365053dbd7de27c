"""Trajectory sources: DSRL HDF5 files, read lazily and mapped once to our vocabulary.

A DSRL file holds seven flat, time-ordered arrays::

    observations (N, obs)  next_observations (N, obs)  actions (N, act)
    rewards (N,)  costs (N,)  terminals (N,)  timeouts (N,)

:func:`read_dsrl` maps ``terminals`` -> ``terminations`` and ``timeouts`` -> ``truncations`` (the only
place the DSRL names appear) and splits episodes where ``terminations | truncations`` is true.

**A trailing run of transitions with neither flag** (a file cut after the last episode end) is
treated as one more episode that ends at the end of the file. The flags themselves are left as
read, so :func:`write_dsrl` writes back exactly what it was given.

When the file name has the DSRL form ``<EnvId>-<cost cap>-<trajectories>.hdf5``
(``SafetyCarCircle-v0-100-1450.hdf5``), the number of episodes found must equal the number in the
name; a mismatch means the file is truncated or is not the DSRL release.

Memory: with ``lazy=True`` (the default) observations, next observations and actions stay on disk
as ``h5py.Dataset`` objects and are read in slices; rewards, costs and the flags (one value per
step) are loaded. Every check of the lazy arrays (NaN/inf scan) runs in row chunks, so reading a
4.4M-transition, 88-dim file needs a few hundred MB, not the file's size.

Example:
    >>> from feedbackgen.sources import read_dsrl                          # doctest: +SKIP
    >>> with read_dsrl("SafetyBallRun-v0-80-940.hdf5") as traj:            # doctest: +SKIP
    ...     print(traj.n_transitions, traj.n_episodes, traj.obs_dim)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feedbackgen._io import atomic_path, sha256_file  # noqa: F401  (sha256_file: re-exported)
from feedbackgen.errors import FeedbackgenError
from feedbackgen.tasks import Task

#: DSRL key -> our name, in file order.
DSRL_KEYS: dict[str, str] = {
    "observations": "observations",
    "next_observations": "next_observations",
    "actions": "actions",
    "rewards": "rewards",
    "costs": "costs",
    "terminals": "terminations",
    "timeouts": "truncations",
}
SOURCE_FORMAT = "dsrl-hdf5"
#: rows per chunk for scans and copies of (N, d) arrays: about 16 MB of float32 at d = 88.
SCAN_CHUNK_ROWS = 1 << 16
_DSRL_NAME = re.compile(r"^(?P<env>.+)-(?P<cap>\d+(?:\.\d+)?)-(?P<count>\d+)\.(?:hdf5|h5)$")

ProgressFn = Callable[[str, int, int], None]


@dataclass
class Trajectories:
    """Flat, time-ordered transitions with their episode split.

    ``observations``, ``next_observations`` and ``actions`` may be ``h5py.Dataset`` objects (lazy;
    slice them) or numpy arrays; the per-step arrays and the episode table are numpy arrays.
    Use as a context manager (or call :meth:`close`) to release the HDF5 file.

    Attributes:
        observations: (N, obs) float.
        next_observations: (N, obs) float.
        actions: (N, act) float.
        rewards: (N,) float32.
        costs: (N,) float32.
        terminations: (N,) bool (DSRL ``terminals``).
        truncations: (N,) bool (DSRL ``timeouts``).
        episode_start: (E,) int64 global index of each episode's first transition.
        episode_length: (E,) int64.
        path: the file read, if any.
        attrs: the HDF5 root attributes.
    """

    observations: Any
    next_observations: Any
    actions: Any
    rewards: np.ndarray
    costs: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    episode_start: np.ndarray
    episode_length: np.ndarray
    path: Path | None = None
    attrs: dict = field(default_factory=dict)
    _file: Any = field(default=None, repr=False)

    @property
    def n_transitions(self) -> int:
        return int(self.observations.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(self.episode_start.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def episode_returns(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-episode reward and cost sums, (E,) float64 each."""
        return episode_sums(self.rewards, self.episode_start), episode_sums(self.costs, self.episode_start)

    def close(self) -> None:
        """Close the HDF5 file behind the lazy arrays (no-op for in-memory trajectories)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Trajectories:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def episode_sums(values: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
    """Sum a per-step array over each episode (episodes are contiguous and cover all steps)."""
    values = np.asarray(values, dtype=np.float64)
    if episode_start.size == 0:
        return np.zeros(0)
    return np.add.reduceat(values, np.asarray(episode_start, dtype=np.int64))


def split_episodes(terminations: np.ndarray, truncations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Episode ``(start, length)`` from the end flags; a trailing unflagged run is one more episode.

    Example:
        >>> s, n = split_episodes(np.array([0, 1, 0, 0, 0], bool), np.array([0, 0, 0, 1, 0], bool))
        >>> s.tolist(), n.tolist()
        ([0, 2, 4], [2, 2, 1])
    """
    done = np.asarray(terminations, bool) | np.asarray(truncations, bool)
    n = done.shape[0]
    ends = np.flatnonzero(done) + 1
    if ends.size == 0 or ends[-1] != n:
        ends = np.append(ends, n) if n else ends
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64) if ends.size else np.zeros(0, np.int64)
    return starts, (ends - starts).astype(np.int64)


def expected_trajectories(path: str | Path) -> int | None:
    """The trajectory count in a DSRL file name (``...-100-1450.hdf5`` -> 1450), else None."""
    m = _DSRL_NAME.match(Path(path).name)
    return int(m.group("count")) if m else None


def _scan_finite(name: str, dset: Any, path: Path, progress: ProgressFn | None = None) -> None:
    """Raise if ``dset`` holds NaN or inf, reading it in row chunks."""
    n = int(dset.shape[0])
    for lo in range(0, n, SCAN_CHUNK_ROWS):
        block = np.asarray(dset[lo:lo + SCAN_CHUNK_ROWS])
        if not np.isfinite(block).all():
            bad = lo + int(np.flatnonzero(~np.isfinite(block).reshape(block.shape[0], -1).all(axis=1))[0])
            raise FeedbackgenError(f"{path}: '{name}' has NaN or inf values (first at row {bad}); "
                                   "the file is damaged, fix or re-download it")
        if progress is not None:
            progress(f"checking {name}", min(n, lo + SCAN_CHUNK_ROWS), n)


def _flags(name: str, dset: Any, path: Path) -> np.ndarray:
    raw = np.asarray(dset[...])
    if raw.dtype.kind == "b":
        return raw.astype(bool)
    if raw.dtype.kind not in "iuf" or not np.isin(raw, (0, 1)).all():
        raise FeedbackgenError(f"{path}: '{name}' must hold booleans (0/1), found dtype {raw.dtype} "
                               "with other values; the file is not in DSRL format")
    return raw.astype(bool)


def read_dsrl(path: str | Path, *, lazy: bool = True, check_count: bool = True,
              progress: ProgressFn | None = None) -> Trajectories:
    """Read and validate a DSRL-format HDF5 file.

    Args:
        path: the ``.hdf5`` file.
        lazy: keep observations, next observations and actions on disk (h5py datasets); the file
            stays open until :meth:`Trajectories.close`. ``False`` loads everything into memory.
        check_count: compare the episode count with the count in a DSRL-style file name.
        progress: optional ``progress(step, done, total)`` callback for the chunked checks.

    Returns:
        The trajectories, episodes split on ``terminations | truncations``.

    Raises:
        FeedbackgenError: missing file, not HDF5 (corrupt or truncated), missing key, wrong
            dtype or shape, arrays of different lengths, NaN/inf in observations, actions,
            rewards or costs, or an episode count that contradicts the file name.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FeedbackgenError(f"source file {path} does not exist; pass an existing file with --source")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FeedbackgenError(f"{path} is not a readable HDF5 file (corrupt or truncated: {reason}); "
                               "re-download it or pass another --source") from None
    try:
        traj = _read_open(f, path, lazy=lazy, check_count=check_count, progress=progress)
    except FeedbackgenError:
        f.close()
        raise
    except (OSError, RuntimeError, ValueError, KeyError) as exc:  # h5py read errors on damaged data
        f.close()
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FeedbackgenError(f"{path}: reading failed ({reason}); the file is damaged, "
                               "re-download it or pass another --source") from None
    if not lazy:
        f.close()
        traj._file = None
    return traj


def _read_open(f: Any, path: Path, *, lazy: bool, check_count: bool,
               progress: ProgressFn | None) -> Trajectories:
    import h5py

    dsets = {}
    for key in DSRL_KEYS:
        obj = f.get(key)
        if not isinstance(obj, h5py.Dataset):
            have = ", ".join(sorted(f.keys())) or "nothing"
            raise FeedbackgenError(f"{path} has no dataset '{key}' (it has {have}); a DSRL file needs "
                                   f"{', '.join(DSRL_KEYS)}")
        dsets[key] = obj
    obs, nobs, act = dsets["observations"], dsets["next_observations"], dsets["actions"]
    n = int(obs.shape[0]) if obs.ndim else -1
    for key in ("observations", "next_observations", "actions"):
        d = dsets[key]
        if d.ndim != 2 or d.dtype.kind not in "fiu":
            raise FeedbackgenError(f"{path}: '{key}' must be a 2-D numeric array (N, dim), found shape "
                                   f"{d.shape} dtype {d.dtype}; the file is not in DSRL format")
    if nobs.shape != obs.shape:
        raise FeedbackgenError(f"{path}: 'next_observations' has shape {nobs.shape} but 'observations' "
                               f"has {obs.shape}; the file is damaged")
    for key in ("rewards", "costs", "terminals", "timeouts"):
        d = dsets[key]
        if d.ndim != 1:
            raise FeedbackgenError(f"{path}: '{key}' must be 1-D (N,), found shape {d.shape}; "
                                   "the file is not in DSRL format")
        if key in ("rewards", "costs") and d.dtype.kind not in "fiu":
            raise FeedbackgenError(f"{path}: '{key}' must be numeric, found dtype {d.dtype}")
    lengths = {key: int(d.shape[0]) for key, d in dsets.items()}
    if len(set(lengths.values())) != 1:
        detail = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise FeedbackgenError(f"{path}: the arrays have different lengths ({detail}); the file is damaged")
    if n == 0:
        raise FeedbackgenError(f"{path} holds no transitions; pass a non-empty --source")

    rewards = np.asarray(dsets["rewards"][...], dtype=np.float32)
    costs = np.asarray(dsets["costs"][...], dtype=np.float32)
    _scan_finite("rewards", rewards, path)
    _scan_finite("costs", costs, path)
    for key in ("observations", "next_observations", "actions"):
        _scan_finite(key, dsets[key], path, progress)
    terminations = _flags("terminals", dsets["terminals"], path)
    truncations = _flags("timeouts", dsets["timeouts"], path)
    start, length = split_episodes(terminations, truncations)
    expected = expected_trajectories(path) if check_count else None
    if expected is not None and expected != start.size:
        raise FeedbackgenError(f"{path}: the file name says {expected} trajectories but the episode split "
                               f"(terminals | timeouts) gives {start.size}; the file is truncated or not the "
                               "DSRL release (re-download it, or rename it without the count)")
    if lazy:
        o, no, a = obs, nobs, act
    else:
        o, no, a = (np.asarray(d[...], dtype=np.float32) for d in (obs, nobs, act))
    return Trajectories(observations=o, next_observations=no, actions=a, rewards=rewards, costs=costs,
                        terminations=terminations, truncations=truncations, episode_start=start,
                        episode_length=length, path=path, attrs=_attrs(f), _file=f)


def _attrs(f: Any) -> dict:
    out = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        out[str(k)] = v
    return out


def write_dsrl(path: str | Path, traj: Trajectories, attrs: dict | None = None,
               compression: str | None = None) -> Path:
    """Write ``traj`` as a DSRL HDF5 file, atomically (temporary sibling, then rename).

    The seven DSRL keys are written (``terminations`` -> ``terminals``, ``truncations`` ->
    ``timeouts``); lazy arrays are copied in row chunks. ``attrs`` become root attributes
    (values that are not numbers or strings are stored as JSON text).

    ``compression``: ``None`` (plain, the default), ``"gzip"`` (level 6) or ``"lzf"``: HDF5 filters
    with byte shuffling, applied per chunk and transparent to every HDF5 reader (h5py decodes
    both; gzip is in every HDF5 build, lzf in h5py's). High-dimensional observations that are mostly
    constant (MetaDrive's lidar) shrink several-fold.

    Raises:
        FeedbackgenError: arrays of different lengths, or the folder is not writable.
    """
    import json

    import h5py

    path = Path(path)
    n = int(traj.observations.shape[0])
    arrays = {dsrl: getattr(traj, ours) for dsrl, ours in DSRL_KEYS.items()}
    bad = {k: int(v.shape[0]) for k, v in arrays.items() if int(v.shape[0]) != n}
    if bad:
        raise FeedbackgenError(f"cannot write {path}: arrays differ in length from observations ({n}): {bad}")
    dtypes = {"observations": "float32", "next_observations": "float32", "actions": "float32",
              "rewards": "float32", "costs": "float32", "terminals": "bool", "timeouts": "bool"}
    if compression not in (None, "gzip", "lzf"):
        raise FeedbackgenError(f"unknown HDF5 compression {compression!r}: use None, 'gzip' or 'lzf'")
    filters = ({"compression": compression, "shuffle": True} if compression else {})
    if compression == "gzip":
        filters["compression_opts"] = 6
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FeedbackgenError(f"cannot create folder {path.parent} ({exc.strerror}); "
                               "choose another path") from None
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, src in arrays.items():
            shape = tuple(int(s) for s in src.shape)
            # equal chunks of at most SCAN_CHUNK_ROWS rows: HDF5 allocates a whole last chunk, so
            # 65,537 rows in chunks of 65,536 would take the space of 131,072
            rows = -(-n // -(-n // SCAN_CHUNK_ROWS)) if n else 0
            if compression:  # a compressed chunk is decoded whole: keep chunks small (~4k rows)
                rows = min(rows, 4096)
            chunks = (max(1, rows),) + shape[1:] if n else None
            d = f.create_dataset(key, shape=shape, dtype=dtypes[key], chunks=chunks,
                                 **(filters if n else {}))
            for lo in range(0, n, SCAN_CHUNK_ROWS):
                d[lo:lo + SCAN_CHUNK_ROWS] = np.asarray(src[lo:lo + SCAN_CHUNK_ROWS], dtype=dtypes[key])
        for k, v in (attrs or {}).items():
            f.attrs[k] = v if isinstance(v, (int, float, str, bool, np.generic)) else json.dumps(v)
    return path


def dsrl_cache_dir() -> Path:
    """The DSRL cache folder: ``$DSRL_DATASET_DIR`` or ``~/.dsrl/datasets`` (as the ``dsrl`` package)."""
    env = os.environ.get("DSRL_DATASET_DIR")
    return Path(env).expanduser() if env else Path.home() / ".dsrl" / "datasets"


def source_status(task: Task) -> tuple[str, Path | None]:
    """Where a task's data is now, without downloading: ``(kind, path)``.

    ``kind`` is ``shipped`` (a dataset of this project), ``cache`` (in the DSRL cache folder) or
    ``missing`` (``path`` is then where a download would put it).
    """
    if task.origin == "shipped" and task.source_path is not None:
        return ("shipped" if task.source_path.is_file() else "missing"), task.source_path
    if task.dsrl_file:
        p = dsrl_cache_dir() / task.dsrl_file
        return ("cache" if p.is_file() else "missing"), p
    return "missing", None


def locate_source(task: Task, source: str | Path | None = None, *, download: bool = True,
                  progress: ProgressFn | None = None) -> Path:
    """Find the trajectory file of ``task``.

    Order: an explicit ``source``; the shipped dataset's file; the DSRL cache folder
    (:func:`dsrl_cache_dir`); a download from the DSRL hosts into that folder (``download=True``).

    Raises:
        FeedbackgenError: ``source`` does not exist, or the file is not found and cannot be
            downloaded (names the file, the cache folder and ``--source``).
    """
    if source is not None:
        given = Path(source).expanduser()
        if not given.is_file():
            raise FeedbackgenError(f"source file {given} does not exist; pass an existing file with --source")
        return given
    kind, p = source_status(task)
    if kind in ("shipped", "cache") and p is not None:  # source_status names a path for these kinds
        return p
    if task.origin == "shipped":
        raise FeedbackgenError(f"the data file {p} of shipped dataset {task.name} is missing; restore it "
                               "or pass a file with --source")
    if not task.dsrl_file:
        raise FeedbackgenError(f"task {task.name} has no DSRL file; pass its data with --source")
    cache = dsrl_cache_dir()
    if not download:
        raise FeedbackgenError(f"{task.dsrl_file} is not in the DSRL cache {cache} and downloading is off; "
                               f"download it there or pass the file with --source")
    from feedbackgen.download import download_dsrl_file

    return download_dsrl_file(task.dsrl_file, cache, progress=progress)
