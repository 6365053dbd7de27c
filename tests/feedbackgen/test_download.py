"""The downloader against a local HTTP server: mirror order, Range resume, checksum sidecar, errors."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedbackgen.download import check_recorded_checksum, download_dsrl_file, recorded_checksum, sidecar_path
from feedbackgen.errors import FeedbackgenError

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD under /good/<name>; honours Range; /missing/ is 404; logs every request."""

    payload = PAYLOAD
    requests: list[tuple[str, str | None]] = []
    cut_first: list[int] = []  # bytes after which the first full response is cut off

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        rng = self.headers.get("Range")
        type(self).requests.append((self.path, rng))
        if not self.path.startswith("/good/"):
            self.send_error(404)
            return
        start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
        if start >= len(self.payload):
            self.send_error(416)
            return
        body = self.payload[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_first and not rng:
            self.wfile.write(body[: self.cut_first.pop()])  # then close: a broken download
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.requests = []
    _Handler.cut_first = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_falls_back_to_second_mirror_and_records_checksum(server: str, tmp_path: Path) -> None:
    urls = (server + "/missing/{file}", server + "/good/{file}")
    path = download_dsrl_file("X-v0-10-3.hdf5", tmp_path, urls=urls, backoff=0.0)
    assert path.read_bytes() == PAYLOAD
    assert [p for p, _ in _Handler.requests] == ["/missing/X-v0-10-3.hdf5", "/good/X-v0-10-3.hdf5"]
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert recorded_checksum(path) == digest
    assert sidecar_path(path).read_text() == f"{digest}  X-v0-10-3.hdf5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X-v0-10-3.hdf5", "X-v0-10-3.hdf5.sha256"]


def test_resumes_partial_file_with_range(server: str, tmp_path: Path) -> None:
    (tmp_path / "f.hdf5.part").write_bytes(PAYLOAD[:1000])
    path = download_dsrl_file("f.hdf5", tmp_path, urls=(server + "/good/{file}",), backoff=0.0)
    assert path.read_bytes() == PAYLOAD
    assert _Handler.requests == [("/good/f.hdf5", "bytes=1000-")]


def test_retries_after_a_broken_connection_and_resumes(server: str, tmp_path: Path) -> None:
    _Handler.cut_first.append(5000)
    path = download_dsrl_file("f.hdf5", tmp_path, urls=(server + "/good/{file}",), retries=3, backoff=0.0)
    assert path.read_bytes() == PAYLOAD
    assert _Handler.requests == [("/good/f.hdf5", None), ("/good/f.hdf5", "bytes=5000-")]


def test_checksum_mismatch_with_recorded(server: str, tmp_path: Path) -> None:
    sidecar_path(tmp_path / "f.hdf5").write_text("0" * 64 + "  f.hdf5\n")
    with pytest.raises(FeedbackgenError, match="was recorded before"):
        download_dsrl_file("f.hdf5", tmp_path, urls=(server + "/good/{file}",), backoff=0.0)
    assert not (tmp_path / "f.hdf5").exists() and not (tmp_path / "f.hdf5.part").exists()
    (tmp_path / "g.hdf5").write_bytes(b"abc")
    sidecar_path(tmp_path / "g.hdf5").write_text("1" * 64 + "  g.hdf5\n")
    with pytest.raises(FeedbackgenError, match="delete it"):
        check_recorded_checksum(tmp_path / "g.hdf5", hashlib.sha256(b"abc").hexdigest())


def test_offline_is_one_clear_error(tmp_path: Path) -> None:
    # port 9 on localhost: connection refused, like a machine without network
    with pytest.raises(FeedbackgenError) as exc:
        download_dsrl_file("SafetyBallRun-v0-80-940.hdf5", tmp_path / "cache",
                           urls=("http://127.0.0.1:9/{file}",), retries=2, backoff=0.0, timeout=2)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "SafetyBallRun-v0-80-940.hdf5" in msg and str(tmp_path / "cache") in msg and "--source" in msg
    assert not (tmp_path / "cache" / "SafetyBallRun-v0-80-940.hdf5").exists()
