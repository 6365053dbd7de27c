"""The annotation server: loopback only, no ground truth in any response, journal that survives a
killed server, frames served as PNG strips, and frames recorded by a real bullet collection."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from feedbackgen.annotate import Annotation, journal_path, loopback_host, make_server
from feedbackgen.errors import FeedbackgenError
from feedbackgen.labels import import_labels
from feedbackgen.store import open_store, write_store

FORBIDDEN_KEYS = re.compile(r'"[^"]*(reward|cost|oracle|label|return|quality|metadata|prob|teacher)[^"]*"'
                            r'\s*:')


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.7", "10.0.0.1", "::", "example.com", ""])
def test_non_loopback_bind_is_refused(tiny_store: Path, host: str) -> None:
    with pytest.raises(FeedbackgenError, match="loopback"):
        make_server(tiny_store, host=host)
    assert not journal_path(tiny_store).exists()  # refused before anything was opened


def test_loopback_names() -> None:
    assert loopback_host("localhost") == "127.0.0.1"
    assert loopback_host("127.0.0.2") == "127.0.0.2"
    assert loopback_host("[::1]") == "::1"


class Client:
    """Talks to a running server and keeps every response body for the ground-truth scan."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.bodies: list[tuple[str, bytes]] = []

    def request(self, path: str, body: dict | None = None, *,
                headers: dict | None = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, headers=hdrs,
                                     method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                status, raw = res.status, res.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        self.bodies.append((path, raw))
        return status, raw

    def json(self, path: str, body: dict | None = None) -> dict:
        status, raw = self.request(path, body)
        assert status == 200, (path, status, raw)
        return json.loads(raw)


@pytest.fixture
def served(tiny_store: Path):
    server = make_server(tiny_store, pairs=4)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server, Client(server.url)
    server.shutdown()
    server.server_close()


def test_answers_undo_finish_and_no_ground_truth(served, tiny_store: Path, tmp_path: Path) -> None:
    server, c = served
    status, page = c.request("/")
    assert status == 200 and b"Which behaviour is better?" in page
    assert c.request("/app.js")[0] == 200
    state = c.json("/api/state?annotator=alice")
    assert (state["done"], state["total"]) == (0, 4) and state["next"]["pair"] == 0
    seen_segments = set()
    for pref, sa, sb in (("b", True, False), ("a", False, False), ("equal", True, True)):
        nxt = state["next"]
        for side in ("a", "b"):
            seen_segments.add(nxt[side]["segment"])
            obs = c.json(f"/api/segment/{nxt[side]['segment']}/observations")
            assert obs["steps"] == nxt[side]["length"] == 20
            assert c.request(f"/api/segment/{nxt[side]['segment']}/frames.png")[0] == 404  # no frames here
        state = c.json("/api/answer", {"annotator": "alice", "pair": nxt["pair"], "preference": pref,
                                       "safe_a": sa, "safe_b": sb})
    assert state["done"] == 3
    state = c.json("/api/undo", {"annotator": "alice"})
    assert state["done"] == 2 and state["next"]["pair"] == 2
    state = c.json("/api/answer", {"annotator": "alice", "pair": 2, "preference": "b", "safe_a": False,
                                   "safe_b": True})
    # a second annotator gets the same pairs
    assert c.json("/api/state?annotator=bob")["next"]["pair"] == 0
    c.json("/api/answer", {"annotator": "bob", "pair": 0, "preference": "a", "safe_a": True, "safe_b": True})
    # bad requests: answered pair, bad values, wrong content type, foreign Host header, unknown paths
    assert c.request("/api/answer", {"annotator": "alice", "pair": 0, "preference": "a", "safe_a": True,
                                     "safe_b": True})[0] == 400
    assert c.request("/api/answer", {"annotator": "alice", "pair": 3, "preference": "x", "safe_a": True,
                                     "safe_b": True})[0] == 400
    assert c.request("/api/answer", {"annotator": "alice", "pair": 3, "preference": "a"})[0] == 400
    assert c.request("/api/undo", {"annotator": "carol"})[0] == 400
    assert c.request("/api/answer", {"annotator": "teacher:x", "pair": 3, "preference": "a", "safe_a": True,
                                     "safe_b": True})[0] == 400
    assert c.request("/api/undo", {"annotator": "alice"}, headers={"Content-Type": "text/plain"})[0] == 415
    assert c.request("/api/state?annotator=alice", headers={"Host": "evil.example:80"})[0] == 403
    assert c.request("/api/segment/99999/observations")[0] == 404
    assert c.request("/api/segment/x/observations")[0] == 404
    assert c.request("/etc/passwd")[0] == 404

    # ground truth never leaves the server
    data = open_store(tiny_store)
    o = data.oracle
    secrets = {f"{float(v):.4f}" for v in np.asarray(o.segment_return)[sorted(seen_segments)]}
    secrets |= {repr(float(v)) for v in np.asarray(o.rewards)[:50]}
    secrets |= {repr(float(v)) for v in np.asarray(o.segment_cost)[sorted(seen_segments)] if v not in (0, 1)}
    for path, raw in c.bodies:
        text = raw.decode("utf-8", "replace")
        assert not FORBIDDEN_KEYS.search(text), (path, FORBIDDEN_KEYS.search(text).group(0))
        for word in ("reward", "cost", "oracle", "quality", "teacher:"):
            assert word not in text.lower() or (path.startswith("/api/answer") and word == "teacher:"), \
                (path, word)
        for s in secrets:
            assert s not in text, (path, s)
    assert len(c.bodies) > 20

    # the journal -> a new store version with exactly those answers
    lines = [json.loads(x) for x in journal_path(tiny_store).read_text().splitlines()]
    assert lines[0]["op"] == "start" and lines[0]["store_id"] == data.store_id
    assert [x["op"] for x in lines[1:]] == ["answer"] * 3 + ["undo"] + ["answer"] * 2
    res = import_labels(tiny_store, journal_path(tiny_store), out=tmp_path / "v2.zarr")
    new = open_store(res.path)
    P, M = data.pref_a.shape[0], data.safety_segment.shape[0]
    a, b = np.asarray(data.pref_a), np.asarray(data.pref_b)
    np.testing.assert_array_equal(new.pref_a[P:], [a[0], a[1], a[2], a[0]])
    np.testing.assert_array_equal(new.pref_b[P:], [b[0], b[1], b[2], b[0]])
    np.testing.assert_array_equal(new.pref_label[P:], [1.0, 0.0, 1.0, 0.0])
    names = [s["id"] for s in new.metadata["label_sources"]]
    assert [names[i] for i in new.pref_source[P:]] == ["human:alice"] * 3 + ["human:bob"]
    np.testing.assert_array_equal(new.safety_segment[M:], [a[0], b[0], a[1], b[1], a[2], b[2], a[0], b[0]])
    np.testing.assert_array_equal(new.safety_label[M:, 0], [1, 0, 0, 0, 0, 1, 1, 1])
    assert new.safety_single[M:].all() and np.isfinite(new.pref_time[P:]).all()


def test_pairs_already_in_the_store_are_not_asked_again(tiny_store: Path, tmp_path: Path) -> None:
    data = open_store(tiny_store)
    f = tmp_path / "l.csv"
    f.write_text(f"source,a,b,label\nalice,{data.pref_b[0]},{data.pref_a[0]},1\n")
    v2 = import_labels(tiny_store, f).path
    ann = Annotation(v2, pairs=3)
    try:
        assert ann.state("alice")["next"]["pair"] == 1 and ann.state("alice")["total"] == 2
        assert ann.state("bob")["next"]["pair"] == 0
    finally:
        ann.close()


def test_answer_checks_its_values_and_journals_the_confidence(tiny_store: Path, tmp_path: Path) -> None:
    journal = tmp_path / "answers.jsonl"
    ann = Annotation(tiny_store, pairs=3, journal=journal)
    try:
        for bad in ({"pair": "0"}, {"preference": "left"}, {"safe_a": 1}, {"confidence": 1.5},
                    {"confidence": "0.5"}):
            args = {"pair": 0, "preference": "a", "safe_a": True, "safe_b": False, **bad}
            with pytest.raises(FeedbackgenError):
                ann.answer("alice", **args)
        ann.answer("alice", 0, "b", True, False, confidence=1)
        ann.answer("alice", 1, "equal", False, False)
    finally:
        ann.close()
    rows = [json.loads(line)["rows"] for line in journal.read_text().splitlines()[1:]]
    assert [r[0]["label"] for r in rows] == [1.0, 0.5]
    assert all(x["confidence"] == 1.0 and isinstance(x["confidence"], float) for x in rows[0])
    assert all("confidence" not in x for x in rows[1])


def _serve_subprocess(store: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "presa_cli.feedbackgen_app", "annotate", str(store),
                             "--port", "0", "--annotator", "alice", "--pairs", "5", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, m.group(1)


def test_journal_survives_a_killed_server(tiny_store: Path, tmp_path: Path) -> None:
    proc, url = _serve_subprocess(tiny_store)
    try:
        c = Client(url)
        assert b'<meta name="annotator" content="alice">' in c.request("/")[1]  # --annotator fills the page
        for pref in ("a", "b"):
            nxt = c.json("/api/state?annotator=alice")["next"]
            c.json("/api/answer", {"annotator": "alice", "pair": nxt["pair"], "preference": pref,
                                   "safe_a": True, "safe_b": False})
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    journal = journal_path(tiny_store)
    with journal.open("a") as f:  # a crash in the middle of writing the next answer
        f.write('{"op":"answer","id":3,"annotator":"alice","pair":2,"rows":[{"kind":"pref')
    # a restarted server resumes where alice stopped and closes the cut line
    proc, url = _serve_subprocess(tiny_store)
    try:
        state = Client(url).json("/api/state?annotator=alice")
        assert (state["done"], state["next"]["pair"]) == (2, 2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    res = import_labels(tiny_store, journal, out=tmp_path / "after-crash.zarr")
    new = open_store(res.path)
    assert res.preferences == 2 and res.safety == 4
    np.testing.assert_array_equal(new.pref_label[-2:], [0.0, 1.0])


def _store_with_frames(tiny_store: Path, tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = open_store(tiny_store)
    n = data.n_transitions
    index = np.arange(0, n, 3, dtype=np.int64)
    first_ep_end = int(data.episode_start[1])
    index = index[index < first_ep_end]  # frames for the first episode only
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(index.size, 8, 8, 3), dtype=np.uint8)
    data.frame_index, data.frame_images = index, images
    data.metadata = {**data.metadata, "frames": {"every": 3, "size": [8, 8]}}
    return write_store(tmp_path / "framed.zarr", data), images


def test_frames_are_served_as_png_strips(tiny_store: Path, tmp_path: Path) -> None:
    import zlib

    path, images = _store_with_frames(tiny_store, tmp_path)
    ann = Annotation(path, pairs=2)
    try:
        state = ann.state("alice")
        nxt = state["next"]
        # pairs with frames on both sides come first
        assert nxt["a"]["frames"] > 0 and nxt["b"]["frames"] > 0
        seg = nxt["a"]["segment"]
        png = ann.frames_png(seg)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert (w, h) == (8 * nxt["a"]["frames"], 8)
        # decode the strip and compare with the stored frames
        idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
        raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 3)
        rows = raw[:, 1:].reshape(h, -1, 8, 3)
        start = int(open_store(path).segment_start[seg])
        first = int(np.searchsorted(np.arange(0, 10_000, 3), start))
        np.testing.assert_array_equal(rows[:, 0], images[first])
    finally:
        ann.close()


def test_collect_record_frames_then_make_copies_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("bullet_safety_gym")
    from feedbackgen.collect import CollectConfig, collect
    from feedbackgen.frames import frames_path_for
    from feedbackgen.make import MakeConfig, make_store
    from feedbackgen.verify import validate_store

    monkeypatch.setenv("FEEDBACKGEN_DATASETS_DIR", str(tmp_path / "reg"))
    out = collect(CollectConfig(task="BallRun", out=tmp_path / "ds.hdf5", episodes=3, workers=1, seed=1,
                                max_episode_steps=30, record_frames=5, frame_size=16, frame_episodes=2))
    import h5py

    with h5py.File(frames_path_for(out)) as f:
        index, images = f["index"][...], f["images"][...]
    np.testing.assert_array_equal(index, [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55])  # 2 of 3 episodes
    assert images.shape == (12, 16, 16, 3) and images.dtype == np.uint8 and images.std() > 5
    assert json.loads(out.with_suffix(".json").read_text())["frames"]["count"] == 12
    store = make_store(MakeConfig(task="BallRun", source=out, n_pairs=4, n_safety=4, segment_length=10,
                                  out=tmp_path / "s.zarr"))
    data = open_store(store)
    assert validate_store(store).ok
    assert data.frame_index is not None and set(data.frame_index.tolist()) <= set(index.tolist())
    covered = {t for s, n in zip(data.segment_start, data.segment_length, strict=True)
               for t in range(s, s + n)}
    assert set(data.frame_index.tolist()) == {t for t in index.tolist() if t in covered}
    k = int(np.searchsorted(index, data.frame_index[0]))
    np.testing.assert_array_equal(data.frame_images[0], images[k])
    os.remove(frames_path_for(out))  # without the sidecar, the store has no frames
    plain = open_store(make_store(MakeConfig(task="BallRun", source=out, n_pairs=4, n_safety=4,
                                             segment_length=10, out=tmp_path / "p.zarr")))
    assert plain.frame_index is None
