"""``feedbackgen annotate``: a local web page where a person labels pairs of segments.

The page shows two segments of a store side by side as short animations (recorded frames, see
:mod:`feedbackgen.frames`; without frames a plot of the segment's observations, animated), and
asks which is better (a / b / equal) and whether each is safe. Keyboard: ``a``, ``e``, ``b`` pick
the preference, ``1``/``2`` mark A safe/unsafe, ``3``/``4`` mark B safe/unsafe, ``Enter`` saves,
``u`` undoes the last answer, ``r`` replays.

Safety of the data:

- The server binds to a loopback address only (127.0.0.1 by default); any other address is
  refused. Requests must name a loopback ``Host`` (a guard against DNS rebinding) and answers
  must be posted as ``application/json`` (a guard against cross-site form posts).
- Ground truth never leaves the server: the page gets segment ids, episode/step positions,
  frames and observations, never rewards, costs, the oracle group, the stored labels or the
  store's metadata.
- Every answer is appended to a JSON-lines journal next to the store (``<store>.journal.jsonl``)
  and fsynced before the page hears back, so a crash loses at most the answer being given.
  ``feedbackgen annotate STORE --finish`` (or ``feedbackgen import-labels STORE --from JOURNAL``)
  turns the journal into a new store version (:func:`feedbackgen.labels.import_labels`).

Journal lines: ``{"op": "start", "store_id": ...}`` once, then per answer
``{"op": "answer", "id": N, "annotator": NAME, "pair": I, "time": T, "rows": [...]}`` (rows in
the import format of :mod:`feedbackgen.labels`: one preference row and a single safety judgement
per segment) and ``{"op": "undo", "id": N, "annotator": NAME}``.

The pairs asked are the first ``pairs`` preference pairs of the store that came from a teacher,
the same for every annotator (so annotators overlap and their agreement can be measured).
"""

from __future__ import annotations

import html
import ipaddress
import json
import os
import socket
import struct
import threading
import time
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from feedbackgen.errors import FeedbackgenError
from feedbackgen.labels import TEACHER, label_sources, normalize_source, source_columns
from feedbackgen.store import open_store, split_columns

DEFAULT_PAIRS = 20
FRAME_MS = 120
_MAX_BODY = 64 * 1024


def journal_path(store: str | Path) -> Path:
    """Where the journal of ``store`` goes: ``<store>.journal.jsonl`` beside it."""
    store = Path(store)
    return store.with_name(store.name + ".journal.jsonl")


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an (h, w, 3) uint8 image as PNG (zlib only, no imaging library)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def loopback_host(host: str) -> str:
    """``host`` if it is a loopback address (``localhost`` -> ``127.0.0.1``).

    Raises:
        FeedbackgenError: any other address: the page would be reachable from other machines.
    """
    name = str(host).strip().strip("[]")
    if name == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is None or not ip.is_loopback:
        raise FeedbackgenError(f"refusing to serve on {host!r}: annotate serves on a loopback address only "
                               "(127.0.0.1 or ::1) so no other machine can reach the page; "
                               "use --host 127.0.0.1")
    return name


class _Journal:
    """Append-only JSON lines, each fsynced before :meth:`append` returns."""

    def __init__(self, path: Path, store_id: str):
        self.path = path
        new = not path.exists()
        if not path.parent.is_dir():
            raise FeedbackgenError(f"folder {path.parent} of the journal does not exist; "
                                   "choose another --journal")
        self.lines: list[dict] = [] if new else self._read(path, store_id)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if not new and path.stat().st_size and not self._ends_with_newline(path):
            os.write(self._fd, b"\n")  # close a line cut by a crash; readers ignore it
            os.fsync(self._fd)
        if new:
            self.append({"op": "start", "store_id": store_id, "time": time.time()})
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    @staticmethod
    def _ends_with_newline(path: Path) -> bool:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    @staticmethod
    def _read(path: Path, store_id: str) -> list[dict]:
        out = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if isinstance(obj, dict):
                out.append(obj)
        start = next((o for o in out if o.get("op") == "start"), None)
        if start is not None and start.get("store_id") != store_id:
            raise FeedbackgenError(f"journal {path} belongs to store {start.get('store_id')}, "
                                   f"not {store_id}; pass another --journal")
        return out

    def append(self, obj: dict) -> None:
        line = (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
        os.write(self._fd, line)
        os.fsync(self._fd)
        self.lines.append(obj)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Annotation:
    """The annotation session of one store: pairs to ask, answers so far, journal.

    Args:
        store: the store directory (or zip).
        journal: the journal file (default :func:`journal_path`).
        pairs: how many pairs to ask each annotator.
    """

    def __init__(self, store: str | Path, *, journal: str | Path | None = None, pairs: int = DEFAULT_PAIRS):
        if int(pairs) < 1:
            raise FeedbackgenError(f"--pairs must be at least 1, got {pairs}")
        self.store_path = Path(store)
        data = open_store(self.store_path, lazy=True)
        self.data = data
        self.store_id = data.store_id
        sources = label_sources(data)
        psrc, ssrc = source_columns(data)
        self.sources = sources
        self.pref_src, self.safety_src = psrc, ssrc
        a = np.asarray(data.pref_a[...], np.int64)
        b = np.asarray(data.pref_b[...], np.int64)
        teacher_rows = np.flatnonzero([sources[i]["kind"] == TEACHER for i in psrc]) if psrc.size else \
            np.zeros(0, np.int64)
        # never the validation pairs: a person's answers are imported as training rows
        teacher_rows = teacher_rows[~split_columns(data)[0][teacher_rows]]
        if teacher_rows.size == 0:
            raise FeedbackgenError(f"{store} has no teacher preference pairs to ask about; make a store with "
                                   "`feedbackgen make` first")
        self.all_a, self.all_b = a, b
        self.safety_segment = np.asarray(data.safety_segment[...], np.int64)
        self.ep_start = np.asarray(data.episode_start[...], np.int64)
        self.seg_episode = np.asarray(data.segment_episode[...], np.int64)
        self.seg_start = np.asarray(data.segment_start[...], np.int64)
        self.seg_length = np.asarray(data.segment_length[...], np.int64)
        self.frame_index = None if data.frame_index is None else np.asarray(data.frame_index[...], np.int64)
        self.seg_frames = np.zeros(self.seg_start.size, np.int64)
        if self.frame_index is not None:  # pairs that can be animated first (frames may cover a few episodes)
            self.seg_frames = (np.searchsorted(self.frame_index, self.seg_start + self.seg_length)
                               - np.searchsorted(self.frame_index, self.seg_start))
            animated = (self.seg_frames[a[teacher_rows]] > 0) & (self.seg_frames[b[teacher_rows]] > 0)
            teacher_rows = teacher_rows[np.argsort(~animated, kind="stable")]
        rows = teacher_rows[: int(pairs)]
        self.pairs = [(int(a[r]), int(b[r])) for r in rows]
        meta = data.metadata if isinstance(data.metadata, dict) else {}
        dim = data.obs_dim
        self.obs_mean = np.asarray(meta.get("obs_mean") or np.zeros(dim), np.float64)
        self.obs_std = np.asarray(meta.get("obs_std") or np.ones(dim), np.float64)
        self.obs_std = np.where(self.obs_std < 1e-6, 1.0, self.obs_std)
        self.frame_every = (meta.get("frames") or {}).get("every")
        self.lock = threading.Lock()
        self.journal = _Journal(Path(journal) if journal is not None else journal_path(self.store_path),
                                self.store_id)

    # -- answers -------------------------------------------------------------------------------

    def _active(self, annotator: str) -> list[dict]:
        """This annotator's answers that were not undone, in order."""
        answers: dict[int, dict] = {}
        for obj in self.journal.lines:
            if obj.get("annotator") != annotator:
                continue
            if obj.get("op") == "answer":
                answers[int(obj["id"])] = obj
            elif obj.get("op") == "undo":
                answers.pop(int(obj["id"]), None)
        return [answers[k] for k in sorted(answers)]

    def _next_id(self, annotator: str) -> int:
        ids = [int(o["id"]) for o in self.journal.lines if o.get("annotator") == annotator and "id" in o]
        return max(ids, default=0) + 1

    def _in_store(self, source_id: str) -> tuple[set[tuple[int, int]], set[int]]:
        idx = [i for i, s in enumerate(self.sources) if s["id"] == source_id]
        if not idx:
            return set(), set()
        pm, sm = self.pref_src == idx[0], self.safety_src == idx[0]
        pairs = {(min(x, y), max(x, y)) for x, y in zip(self.all_a[pm].tolist(), self.all_b[pm].tolist(),
                                                        strict=True)}
        return pairs, set(self.safety_segment[sm].tolist())

    @staticmethod
    def source_of(annotator: str) -> str:
        """The source id of an annotator name (``alice`` -> ``human:alice``)."""
        if not annotator or not str(annotator).strip():
            raise FeedbackgenError("enter your name (annotator) first")
        sid, kind = normalize_source(str(annotator).strip())
        if kind != "human":
            raise FeedbackgenError(f"annotator {annotator!r} names a teacher; use a person's name")
        return sid

    def _todo(self, annotator: str) -> tuple[list[int], list[dict]]:
        sid = self.source_of(annotator)
        active = self._active(annotator)
        done = {int(o["pair"]) for o in active}
        stored_pairs, _ = self._in_store(sid)
        todo = [i for i, (x, y) in enumerate(self.pairs)
                if i not in done and (min(x, y), max(x, y)) not in stored_pairs]
        return todo, active

    def _n_frames(self, seg: int) -> int:
        return int(self.seg_frames[seg])

    def segment_info(self, seg: int) -> dict[str, Any]:
        """What the page may know of a segment: position and how to show it (no ground truth)."""
        ep = int(self.seg_episode[seg])
        start, length = int(self.seg_start[seg]), int(self.seg_length[seg])
        return {"segment": int(seg), "episode": ep, "step": start - int(self.ep_start[ep]), "length": length,
                "frames": self._n_frames(seg)}

    def state(self, annotator: str) -> dict[str, Any]:
        """Progress of ``annotator`` and the next pair to show (None when every pair is answered)."""
        with self.lock:
            todo, active = self._todo(annotator)
        total = len(active) + len(todo)
        nxt = None
        if todo:
            i = todo[0]
            a, b = self.pairs[i]
            nxt = {"pair": i, "a": self.segment_info(a), "b": self.segment_info(b)}
        return {"store": self.store_id, "annotator": annotator, "done": len(active), "total": total,
                "next": nxt, "can_undo": bool(active), "frame_ms": FRAME_MS}

    def answer(self, annotator: str, pair: object, preference: object, safe_a: object, safe_b: object,
               confidence: object = None) -> dict[str, Any]:
        """Record one answer (journal line, fsynced) and return the new state.

        The values may come straight from a request's JSON and are checked here: ``pair`` an int
        index of a waiting pair, ``preference`` ``a``, ``b`` or ``equal``, ``safe_a``/``safe_b``
        bools, ``confidence`` None or a number in [0, 1].

        Raises:
            FeedbackgenError: unknown pair, a pair already answered, or malformed values.
        """
        sid = self.source_of(annotator)
        label = {"a": 0.0, "b": 1.0, "equal": 0.5}.get(str(preference))
        if label is None:
            raise FeedbackgenError(f"preference must be a, b or equal, got {preference!r}")
        if not isinstance(safe_a, bool) or not isinstance(safe_b, bool):
            raise FeedbackgenError("mark both segments safe or unsafe")
        conf: float | None = None
        if confidence is not None:
            if not (isinstance(confidence, (int, float)) and 0 <= confidence <= 1):
                raise FeedbackgenError(f"confidence must be in [0, 1], got {confidence!r}")
            conf = float(confidence)
        with self.lock:
            todo, active = self._todo(annotator)
            if not isinstance(pair, int) or pair not in todo:
                raise FeedbackgenError(f"pair {pair!r} is not waiting for an answer from {annotator}; "
                                       "reload the page")
            a, b = self.pairs[pair]
            now = time.time()
            extra = {} if conf is None else {"confidence": conf}
            rows = [{"kind": "preference", "source": sid, "a": a, "b": b, "label": label, "time": now,
                     **extra}]
            judged = {int(r["segment"]) for o in active for r in o["rows"] if r.get("kind") == "safety"}
            judged |= self._in_store(sid)[1]
            for seg, safe in ((a, safe_a), (b, safe_b)):
                if seg not in judged:
                    rows.append({"kind": "safety", "source": sid, "segment": seg, "safe": int(safe),
                                 "time": now, **extra})
                    judged.add(seg)
            self.journal.append({"op": "answer", "id": self._next_id(annotator), "annotator": annotator,
                                 "pair": pair, "time": now, "rows": rows})
        return self.state(annotator)

    def undo(self, annotator: str) -> dict[str, Any]:
        """Withdraw ``annotator``'s last answer (an ``undo`` journal line) and return the new state."""
        self.source_of(annotator)
        with self.lock:
            active = self._active(annotator)
            if not active:
                raise FeedbackgenError("nothing to undo")
            self.journal.append({"op": "undo", "id": int(active[-1]["id"]), "annotator": annotator,
                                 "time": time.time()})
        return self.state(annotator)

    # -- media ---------------------------------------------------------------------------------

    def _check_segment(self, seg: int) -> None:
        asked = {s for pair in self.pairs for s in pair}
        if seg not in asked:
            raise KeyError(seg)

    def frames_png(self, seg: int) -> bytes:
        """The segment's frames side by side in one PNG strip (KeyError when it has none)."""
        self._check_segment(seg)
        if self.frame_index is None:
            raise KeyError(seg)
        start, length = int(self.seg_start[seg]), int(self.seg_length[seg])
        lo, hi = (int(x) for x in np.searchsorted(self.frame_index, [start, start + length]))
        if hi <= lo:
            raise KeyError(seg)
        images = np.asarray(self.data.frame_images[lo:hi], np.uint8)
        return png_bytes(np.concatenate(list(images), axis=1))

    def observations(self, seg: int) -> dict[str, Any]:
        """The segment's observations, standardised with the store's mean/std and clipped to ±5."""
        self._check_segment(seg)
        start, length = int(self.seg_start[seg]), int(self.seg_length[seg])
        obs = np.asarray(self.data.observations[start:start + length], np.float64)
        z = np.clip((obs - self.obs_mean) / self.obs_std, -5, 5)
        return {"segment": int(seg), "steps": length, "dims": int(z.shape[1]),
                "values": [[round(float(v), 3) for v in row] for row in z]}

    def close(self) -> None:
        self.journal.close()


class _Handler(BaseHTTPRequestHandler):
    server: AnnotateServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # quiet: the CLI prints its own summary

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self'; "
                         "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        port = self.server.server_address[1]
        allowed = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"{self.server.host}:{port}"}
        if host in allowed:
            return True
        self._json(HTTPStatus.FORBIDDEN, {"error": "requests must be addressed to the loopback host"})
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if not self._host_ok():
            return
        url = urlparse(self.path)
        ann: Annotation = self.server.annotation
        try:
            if url.path == "/":
                page = _PAGE.replace("__ANNOTATOR__", html.escape(self.server.annotator or "", quote=True))
                self._send(200, page.encode("utf-8"), "text/html; charset=utf-8")
            elif url.path == "/app.js":
                self._send(200, _SCRIPT.encode("utf-8"), "text/javascript; charset=utf-8")
            elif url.path == "/api/state":
                who = (parse_qs(url.query).get("annotator") or [""])[0]
                if not who:
                    self._json(200, {"store": ann.store_id, "annotator": "", "done": 0,
                                     "total": len(ann.pairs), "next": None, "can_undo": False,
                                     "frame_ms": FRAME_MS})
                else:
                    self._json(200, ann.state(who))
            elif url.path.startswith("/api/segment/"):
                parts = url.path.split("/")  # '', api, segment, ID, what
                if len(parts) != 5 or not parts[3].isdigit():
                    raise KeyError(url.path)
                seg = int(parts[3])
                if parts[4] == "frames.png":
                    self._send(200, ann.frames_png(seg), "image/png")
                elif parts[4] == "observations":
                    self._json(200, ann.observations(seg))
                else:
                    raise KeyError(url.path)
            else:
                raise KeyError(url.path)
        except KeyError:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        except FeedbackgenError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if not self._host_ok():
            return
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        length = int(self.headers.get("Content-Length") or 0)
        if ctype != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send application/json"})
            return
        if length > _MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("expected an object")
        except ValueError:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "the request is not a JSON object"})
            return
        ann: Annotation = self.server.annotation
        try:
            who = str(body.get("annotator") or "")
            if self.path == "/api/answer":
                conf = body.get("confidence")
                self._json(200, ann.answer(who, body.get("pair"), body.get("preference"), body.get("safe_a"),
                                           body.get("safe_b"), None if conf in (None, "") else conf))
            elif self.path == "/api/undo":
                self._json(200, ann.undo(who))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        except FeedbackgenError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except OSError as exc:  # the journal could not be written: the answer is not saved
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR,
                       {"error": f"could not save the answer ({exc.strerror})"})


class AnnotateServer(ThreadingHTTPServer):
    """The annotation web server (loopback only). ``url`` is the page's address."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, annotation: Annotation, *, host: str = "127.0.0.1", port: int = 0,
                 annotator: str | None = None):
        host = loopback_host(host)
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.annotation = annotation
        self.annotator = annotator
        self.host = host
        if annotator:
            annotation.source_of(annotator)  # validate the name before serving
        try:
            super().__init__((host, int(port)), _Handler)
        except OSError as exc:
            raise FeedbackgenError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port "
                                   "(0 picks a free one)") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)  # an AF_INET/AF_INET6 socket's address names its host as text
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self.annotation.close()


def make_server(store: str | Path, *, host: str = "127.0.0.1", port: int = 0, annotator: str | None = None,
                pairs: int = DEFAULT_PAIRS, journal: str | Path | None = None) -> AnnotateServer:
    """Open ``store`` for annotation and bind the server (not yet serving: call ``serve_forever``).

    Raises:
        FeedbackgenError: a non-loopback ``host``, a port in use, a bad annotator name, a store
            without pairs, or a journal of another store.
    """
    loopback_host(host)  # refuse before opening anything
    annotation = Annotation(store, journal=journal, pairs=pairs)
    try:
        return AnnotateServer(annotation, host=host, port=port, annotator=annotator)
    except BaseException:
        annotation.close()
        raise


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>feedbackgen annotate</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="annotator" content="__ANNOTATOR__">
<style>
body { font-family: system-ui, sans-serif; margin: 1.2rem; color: #222; }
header { display: flex; gap: 1.5rem; align-items: center; flex-wrap: wrap; }
.panels { display: flex; gap: 2rem; margin: 1rem 0; }
.panel { border: 2px solid #ccc; border-radius: 8px; padding: .6rem; }
.panel h2 { margin: 0 0 .3rem 0; font-size: 1.1rem; }
canvas { background: #f4f4f4; image-rendering: pixelated; display: block; }
.note { font-size: .85rem; color: #a15c00; min-height: 1.2em; }
.where { font-size: .8rem; color: #666; }
button { font-size: 1rem; padding: .4rem .8rem; margin: .15rem; border-radius: 6px; border: 1px solid #888;
  background: #fafafa; cursor: pointer; }
button.on { background: #2b6cb0; color: white; border-color: #2b6cb0; }
#status { min-height: 1.4em; margin-top: .6rem; }
kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 .25rem; font-size: .8rem; }
</style></head>
<body>
<header>
  <strong>Which behaviour is better?</strong>
  <label>Annotator <input id="annotator" autocomplete="off" size="14"></label>
  <span id="progress"></span>
</header>
<div id="work">
<div class="panels">
  <div class="panel" id="panel-a"><h2>A</h2><canvas id="canvas-a" width="256" height="256"></canvas>
    <div class="note" id="note-a"></div><div class="where" id="where-a"></div>
    <button id="safe-a">safe <kbd>1</kbd></button><button id="unsafe-a">unsafe <kbd>2</kbd></button></div>
  <div class="panel" id="panel-b"><h2>B</h2><canvas id="canvas-b" width="256" height="256"></canvas>
    <div class="note" id="note-b"></div><div class="where" id="where-b"></div>
    <button id="safe-b">safe <kbd>3</kbd></button><button id="unsafe-b">unsafe <kbd>4</kbd></button></div>
</div>
<div>
  <button id="pref-a">A is better <kbd>a</kbd></button>
  <button id="pref-equal">equally good <kbd>e</kbd></button>
  <button id="pref-b">B is better <kbd>b</kbd></button>
  &nbsp; <button id="submit">save <kbd>Enter</kbd></button>
  <button id="undo">undo <kbd>u</kbd></button>
  <button id="replay">replay <kbd>r</kbd></button>
</div>
</div>
<div id="done" hidden><p><strong>All pairs answered. Thank you!</strong> Your answers are saved; close this
page, then stop the server (Ctrl-C) and run <code>feedbackgen annotate STORE --finish</code>.</p>
<button id="undo-done">undo the last answer <kbd>u</kbd></button></div>
<div id="status" role="status"></div>
<script src="/app.js"></script>
</body></html>
"""

_SCRIPT = r"""
"use strict";
let state = null, choice = {pref: null, a: null, b: null}, timers = [];
const $ = (id) => document.getElementById(id);
const nameBox = $("annotator");
nameBox.value = document.querySelector('meta[name="annotator"]').content ||
  localStorage.getItem("annotator") || "";

function say(text) { $("status").textContent = text; }

async function api(path, body) {
  const opt = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify(body)};
  const res = await fetch(path, opt);
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function annotator() { return nameBox.value.trim(); }

async function load() {
  if (!annotator()) { say("Enter your name to start."); nameBox.focus(); showPair(null); return; }
  localStorage.setItem("annotator", annotator());
  try { state = await api("/api/state?annotator=" + encodeURIComponent(annotator())); render(); }
  catch (e) { say("error: " + e.message); }
}

function render() {
  $("progress").textContent = state.done + " / " + state.total + " answered";
  $("undo").disabled = !state.can_undo;
  const finished = !state.next && state.total > 0;
  $("work").hidden = finished;
  $("done").hidden = !finished;
  showPair(state.next);
}

function mark() {
  for (const p of ["a", "equal", "b"]) $("pref-" + p).classList.toggle("on", choice.pref === p);
  for (const s of ["a", "b"]) {
    $("safe-" + s).classList.toggle("on", choice[s] === true);
    $("unsafe-" + s).classList.toggle("on", choice[s] === false);
  }
}

function stop() { timers.forEach(clearInterval); timers = []; }

function showPair(next) {
  stop();
  choice = {pref: null, a: null, b: null};
  mark();
  if (!next) return;
  for (const side of ["a", "b"]) {
    const seg = next[side];
    $("where-" + side).textContent = "segment " + seg.segment + " (episode " + seg.episode + ", steps " +
      seg.step + "–" + (seg.step + seg.length - 1) + ")";
    if (seg.frames > 0) { $("note-" + side).textContent = ""; animateFrames(side, seg); }
    else {
      $("note-" + side).textContent =
        "No recorded frames for this segment: showing its observations over time.";
      plotObservations(side, seg);
    }
  }
}

function animateFrames(side, seg) {
  const img = new Image();
  const canvas = $("canvas-" + side), ctx = canvas.getContext("2d");
  img.onload = () => {
    const w = img.width / seg.frames, h = img.height;
    let k = 0;
    ctx.imageSmoothingEnabled = false;
    const draw = () => {
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(img, k * w, 0, w, h, 0, 0, canvas.width, canvas.height);
      ctx.fillStyle = "#fff"; ctx.fillRect(0, canvas.height - 4, canvas.width, 4);
      ctx.fillStyle = "#2b6cb0"; ctx.fillRect(0, canvas.height - 4, canvas.width * (k + 1) / seg.frames, 4);
      k = (k + 1) % seg.frames;
    };
    draw();
    timers.push(setInterval(draw, state.frame_ms));
  };
  img.src = "/api/segment/" + seg.segment + "/frames.png";
}

async function plotObservations(side, seg) {
  const data = await api("/api/segment/" + seg.segment + "/observations");
  const canvas = $("canvas-" + side), ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, T = data.steps;
  const x = (t) => 8 + (W - 16) * t / Math.max(1, T - 1), y = (v) => H / 2 - v * (H - 16) / 10;
  let k = 0;
  const draw = () => {
    ctx.clearRect(0, 0, W, H);
    for (let d = 0; d < data.dims; d++) {
      ctx.strokeStyle = "hsl(" + (360 * d / data.dims) + ",60%,45%)";
      ctx.beginPath();
      for (let t = 0; t < T; t++) { const px = x(t), py = y(data.values[t][d]);
        if (t === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py); }
      ctx.stroke();
    }
    ctx.strokeStyle = "#000"; ctx.beginPath(); ctx.moveTo(x(k), 0); ctx.lineTo(x(k), H); ctx.stroke();
    k = (k + 1) % T;
  };
  draw();
  timers.push(setInterval(draw, state.frame_ms));
}

function pick(key, value) { choice[key] = value; mark(); }

async function submit() {
  if (!state || !state.next) return;
  if (!choice.pref) { say("Choose A, B or equal first."); return; }
  if (choice.a === null || choice.b === null) { say("Mark both A and B as safe or unsafe."); return; }
  try {
    state = await api("/api/answer", {annotator: annotator(), pair: state.next.pair, preference: choice.pref,
                                      safe_a: choice.a, safe_b: choice.b});
    say("Saved.");
    render();
  } catch (e) { say("error: " + e.message); }
}

async function undo() {
  if (!state || !state.can_undo) { say("Nothing to undo."); return; }
  try { state = await api("/api/undo", {annotator: annotator()}); say("Undone."); render(); }
  catch (e) { say("error: " + e.message); }
}

$("pref-a").onclick = () => pick("pref", "a");
$("pref-equal").onclick = () => pick("pref", "equal");
$("pref-b").onclick = () => pick("pref", "b");
$("safe-a").onclick = () => pick("a", true);
$("unsafe-a").onclick = () => pick("a", false);
$("safe-b").onclick = () => pick("b", true);
$("unsafe-b").onclick = () => pick("b", false);
$("submit").onclick = submit;
$("undo").onclick = undo;
$("undo-done").onclick = undo;
$("replay").onclick = () => state && showPair(state.next);
nameBox.addEventListener("change", load);
document.addEventListener("keydown", (ev) => {
  if (ev.target === nameBox) { if (ev.key === "Enter") { nameBox.blur(); load(); } return; }
  const keys = {a: () => pick("pref", "a"), e: () => pick("pref", "equal"), b: () => pick("pref", "b"),
                "1": () => pick("a", true), "2": () => pick("a", false), "3": () => pick("b", true),
                "4": () => pick("b", false), Enter: submit, u: undo, r: () => state && showPair(state.next)};
  if (keys[ev.key]) { ev.preventDefault(); keys[ev.key](); }
});
load();
"""
