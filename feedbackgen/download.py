"""Download DSRL files into the cache folder: mirrors in order, retries, resumable, checksummed.

The DSRL files moved to the project's Hugging Face dataset repository in November 2025; the
released ``dsrl`` package still points at the old host. Both are tried, in that order
(:data:`DSRL_URLS`). Each attempt appends to ``<file>.part`` with an HTTP ``Range`` request, so an
interrupted download resumes where it stopped; the finished file is renamed into place. On the
first download its SHA-256 is recorded in ``<file>.sha256`` (``sha256sum`` format); a later
download of the same file must match it (:func:`check_recorded_checksum`).

Only the standard library is used (``urllib``).
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from feedbackgen._io import sha256_file
from feedbackgen.errors import FeedbackgenError

DSRL_URLS: tuple[str, ...] = (
    "https://huggingface.co/datasets/YYY-45/DSRL/resolve/main/{file}",
    "http://data.offline-saferl.org/download/{file}",
)
_BLOCK = 1 << 20
#: environment variable with URL templates (``{file}`` placeholder, separated by spaces) to try
#: instead of :data:`DSRL_URLS`, e.g. a local mirror.
MIRRORS_ENV = "FEEDBACKGEN_DSRL_MIRRORS"

ProgressFn = Callable[[str, int, int], None]


def sidecar_path(path: Path) -> Path:
    """``<file>.sha256``: the checksum recorded on first download."""
    return path.with_name(path.name + ".sha256")


def recorded_checksum(path: str | Path) -> str | None:
    """The SHA-256 recorded beside ``path`` on first download, if any."""
    side = sidecar_path(Path(path))
    if not side.is_file():
        return None
    text = side.read_text().strip()
    return text.split()[0].lower() if text else None


def check_recorded_checksum(path: str | Path, sha256: str) -> None:
    """Compare a file's SHA-256 with the one recorded on its first download (if recorded).

    Raises:
        FeedbackgenError: they differ (the cached file changed or is damaged).
    """
    rec = recorded_checksum(path)
    if rec is not None and rec != sha256.lower():
        raise FeedbackgenError(f"{path} has SHA-256 {sha256[:12]}… but {rec[:12]}… was recorded when it was "
                               f"downloaded; delete it and {sidecar_path(Path(path)).name} to download again")


def _fetch(url: str, part: Path, *, timeout: float, progress: ProgressFn | None, label: str) -> None:
    """One attempt: continue ``part`` from its current size (Range), or restart when refused."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "feedbackgen"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # asked past the end: the part file is already complete
            return
        raise
    with resp:
        status = getattr(resp, "status", 200)
        if have and status != 206:  # server ignored the Range: start over
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else 0
        with part.open("ab" if have else "wb") as out:
            done = have
            while block := resp.read(_BLOCK):
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(label, done, max(total, done))
        if total and done < total:
            raise urllib.error.URLError(f"connection closed after {done} of {total} bytes")


def mirror_urls() -> tuple[str, ...]:
    """URL templates to try: ``$FEEDBACKGEN_DSRL_MIRRORS`` if set, else :data:`DSRL_URLS`."""
    env = os.environ.get(MIRRORS_ENV, "").split()
    return tuple(env) if env else DSRL_URLS


def download_dsrl_file(file_name: str, dest_dir: str | Path, *, urls: Sequence[str] | None = None,
                       retries: int = 3, backoff: float = 2.0, timeout: float = 60.0,
                       progress: ProgressFn | None = None) -> Path:
    """Download ``file_name`` into ``dest_dir`` from the first mirror that serves it.

    Args:
        file_name: the DSRL file name (``SafetyBallRun-v0-80-940.hdf5``).
        dest_dir: the cache folder.
        urls: URL templates with ``{file}``, tried in order (default :func:`mirror_urls`).
        retries: attempts per URL; attempt k waits ``backoff * 2**(k-1)`` seconds first.
        backoff: base wait in seconds.
        timeout: socket timeout per attempt.
        progress: optional ``progress(step, done_bytes, total_bytes)`` callback.

    Returns:
        The path of the complete file.

    Raises:
        FeedbackgenError: every mirror failed (names the file, the cache folder and ``--source``),
            or the download does not match a previously recorded checksum.
    """
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FeedbackgenError(f"cannot create the DSRL cache {dest_dir} ({exc.strerror}); "
                               "set DSRL_DATASET_DIR to a writable folder or pass the file with --source"
                               ) from None
    final = dest_dir / file_name
    part = dest_dir / (file_name + ".part")
    last = "no mirror tried"
    for template in urls if urls is not None else mirror_urls():
        url = template.format(file=file_name)
        for attempt in range(max(1, retries)):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch(url, part, timeout=timeout, progress=progress, label=f"downloading {file_name}")
            except urllib.error.HTTPError as exc:
                last = f"{url}: HTTP {exc.code}"
                if exc.code in (403, 404, 410):  # this mirror does not have it; next mirror
                    break
                continue
            except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{url}: {reason}"
                continue
            digest = sha256_file(part)
            rec = recorded_checksum(final)
            if rec is not None and rec != digest:
                part.unlink(missing_ok=True)
                raise FeedbackgenError(f"downloaded {file_name} has SHA-256 {digest[:12]}… but {rec[:12]}… "
                                       f"was recorded before; the mirror changed it, check {url}")
            os.replace(part, final)
            if rec is None:
                sidecar_path(final).write_text(f"{digest}  {file_name}\n")
            return final
    raise FeedbackgenError(f"could not download {file_name} into the DSRL cache {dest_dir} ({last}); "
                           "when offline, put the file there or pass it with --source FILE")
