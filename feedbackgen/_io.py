"""Small I/O helpers shared by ``feedbackgen`` and ``presa`` (one copy of each, no torch).

- Atomic writes: :func:`atomic_path` (a temporary sibling to write by any means, fsynced and
  renamed over the target on success, deleted on failure), :func:`atomic_write_text`,
  :func:`atomic_write_bytes`, :func:`atomic_write_json`; for folders :func:`atomic_dir` and
  :func:`replace_dir` (an existing folder is swapped out in one step where the system can).
- :func:`sha256_file` (streamed) and :func:`sha256_tree` (a file, or every file of a folder).
- :func:`git_commit` / :func:`git_state`: the commit (and dirtiness) of the source tree.
- :func:`available_cores`: the cores this process may run on.
- :func:`jsonable` (numpy values and paths to plain JSON values) and :func:`json_safe`
  (non-finite floats to ``None``, so the JSON stays standard).
- :func:`read_yaml_mapping`: a YAML file that must hold a mapping, with one-line errors.

Temporary siblings are named ``.NAME.tmp-PID-XXXXXXXX`` (``.STEM.tmp-PID-XXXXXXXX.SUFFIX`` with
``keep_suffix``), the pattern :func:`feedbackgen.store.remove_stale_temporaries` recognises.

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = atomic_write_json(d / "a.json", {"x": 1}, indent=None)
    >>> (d / "a.json").read_text()
    '{"x": 1}\\n'
    >>> sorted(p.name for p in d.iterdir())
    ['a.json']
    >>> shutil.rmtree(d)
    >>> json_safe({"a": float("nan"), "b": [1.5, float("inf")]})
    {'a': None, 'b': [1.5, None]}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_dir", "atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "available_cores", "exchange_paths", "git_commit", "git_state", "json_safe", "jsonable",
    "read_yaml_mapping", "replace_dir", "sha256_file", "sha256_tree", "temp_sibling",
]

_BLOCK = 8 << 20

# ---------------------------------------------------------------------------------- atomic writes


def temp_sibling(path: str | os.PathLike[str], *, keep_suffix: bool = False) -> Path:
    """A fresh temporary name next to ``path``: ``.NAME.tmp-PID-XXXXXXXX`` (or, with
    ``keep_suffix``, ``.STEM.tmp-PID-XXXXXXXX.SUFFIX``, for writers that infer the format from it)."""
    path = Path(path)
    tag = f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if keep_suffix:
        return path.parent / f".{path.stem}.{tag}{path.suffix}"
    return path.parent / f".{path.name}.{tag}"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; when the block ends without an exception the
    file is fsynced and renamed to ``path`` (replacing it), otherwise it is deleted.

    The parent folder must exist."""
    path = Path(path)
    tmp = temp_sibling(path, keep_suffix=keep_suffix)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, rename); returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary sibling, fsync, rename); returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, **kw: Any) -> Path:
    """Write ``json.dumps(obj, indent=indent, **kw)`` and a newline to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **kw) + "\n")


def exchange_paths(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        True when swapped; False where the platform, C library or file system cannot do it (the
        paths are then unchanged).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.5
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h>, <linux/fs.h>
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def replace_dir(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Move the finished folder ``tmp`` to ``path``; an existing ``path`` is replaced only now.

    An existing ``path`` is swapped with ``tmp`` in one atomic step where the system can
    (:func:`exchange_paths`), so at every moment the name holds either the old or the new folder;
    the old one, now under ``tmp``'s name, is then deleted (after a hard kill,
    :func:`feedbackgen.store.remove_stale_temporaries` deletes it). Elsewhere the old folder is
    renamed aside first: a crash between the two renames leaves it as ``.NAME.old-XXXXXXXX`` and
    the name empty.
    """
    tmp, path = Path(tmp), Path(path)
    if path.exists():
        if exchange_paths(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        trash = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(path, trash)
        os.rename(tmp, path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new, empty temporary sibling folder of ``path`` to fill; when the block ends without
    an exception it replaces ``path`` (:func:`replace_dir`), otherwise it is deleted.

    The folder is made with ``mkdir`` (not ``mkdtemp``, whose 0700 mode would stick to the result).
    """
    path = Path(path)
    tmp = temp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike[str], *,
                progress: Callable[[str, int, int], None] | None = None) -> str:
    """Hex SHA-256 of a file, read in 8 MB blocks; ``progress("hashing source", done, total)``
    is called after each block when given."""
    path = Path(path)
    h = hashlib.sha256()
    total = path.stat().st_size if progress is not None else 0
    done = 0
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
            done += len(block)
            if progress is not None:
                progress("hashing source", done, total)
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, or of the bytes of every file under a folder in sorted path order."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while block := fh.read(_BLOCK):
                h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------ environment

_SOURCE_ROOT = Path(__file__).resolve().parent


def git_commit(root: str | os.PathLike[str] | None = None, *, timeout: float = 5) -> str | None:
    """``git rev-parse HEAD`` of the tree holding ``root`` (default: this package's source), or
    None when git or the repository is not there."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(root) if root else _SOURCE_ROOT,
                             capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def git_state(root: str | os.PathLike[str] | None = None, *,
              timeout: float = 10) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the tree holding ``root``: dirty means tracked files differ from the
    commit. ``(None, None)`` when git or the repository is not there."""
    cwd = str(Path(root) if root else _SOURCE_ROOT)
    try:
        commit = subprocess.run(["git", "-C", cwd, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=timeout, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", cwd, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=timeout, check=True).stdout
        dirty = status.strip() != ""
        return commit or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def available_cores() -> int:
    """Cores this process may run on (``sched_getaffinity`` where available), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------- JSON


def jsonable(obj: Any) -> Any:
    """Round-trip through JSON so numpy scalars and arrays and paths become plain values.

    >>> import numpy as np
    >>> jsonable({"a": np.float32(0.5), "b": np.arange(2), "c": Path("x")})
    {'a': 0.5, 'b': [0, 1], 'c': 'x'}
    """
    import numpy as np

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
    return json.loads(json.dumps(obj, default=default, allow_nan=True))


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats (numpy ones included) by None, in dicts, lists and tuples, so the
    JSON stays standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------- YAML


def read_yaml_mapping(path: str | os.PathLike[str], what: str, keys_hint: str) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (an empty file gives ``{}``).

    ``what`` names the file in errors (``"config file"``); ``keys_hint`` ends the not-a-mapping
    error (``"of config keys, got list"``).

    Raises:
        FeedbackgenError: missing or unreadable file, not YAML, or not a mapping.
    """
    import yaml

    from feedbackgen.errors import FeedbackgenError

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise FeedbackgenError(f"{what} {p} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        raise FeedbackgenError(f"{what} {p} is not readable YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FeedbackgenError(f"{what} {p} must hold a mapping {keys_hint.format(type=type(data).__name__)}")
    return data
