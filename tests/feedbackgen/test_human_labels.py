"""Human labels: import (CSV / JSON lines / journal), every error by line number, per-source
statistics with Cohen's kappa on a hand example, optional-array validation, training by source."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.labels import (
    LabelImportError,
    bump_version,
    import_labels,
    label_sources,
    select_sources,
    source_statistics,
)
from feedbackgen.store import open_store, write_store
from feedbackgen.verify import validate_store

TEACHER = "teacher:oracle+mistake"


def tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_import_csv_round_trip(tiny_store: Path, tmp_path: Path) -> None:
    old = open_store(tiny_store)
    before = tree_hash(tiny_store)
    S, P, M, H = old.n_segments, old.pref_a.shape[0], old.safety_segment.shape[0], 20
    used = set(np.asarray(old.segment_start).tolist())
    free = [(e, t) for e in range(old.n_episodes) for t in range(int(old.episode_length[e]) - H + 1)
            if int(old.episode_start[e]) + t not in used]
    assert len(free) >= 2, "the tiny store leaves windows unused"
    (e, t), (e2, t2) = free[0], free[-1]
    f = write(tmp_path / "labels.csv",
              "kind,source,time,confidence,a,b,label,a_episode,a_start,a_length,b_episode,b_start,b_length,"
              "segment,safe,safe@5,safe@10,safe@20,episode,start,length\n"
              f"preference,alice,2025-01-31T10:00:00Z,0.8,3,{P + 3},1,,,,,,,,,,,,,,\n"
              f"preference,human:bob,1700000000,,,,a,{e},{t},{H},{e2},{t2},{H},,,,,,,,\n"
              f"safety,alice,,,,,,,,,,,,5,unsafe,,,,,,\n"
              f"safety,bob,,1,,,,,,,,,,,,1,0,0,{e},{t},{H}\n")
    res = import_labels(tiny_store, f)
    assert res.path == tiny_store.with_name("tiny-v2.zarr")
    assert tree_hash(tiny_store) == before  # the original is untouched
    assert res.store_id == bump_version(old.store_id) and res.store_id.endswith("-v2")
    assert (res.preferences, res.safety, res.new_segments) == (2, 2, 2)
    assert validate_store(res.path).ok, validate_store(res.path).problems

    new = open_store(res.path)
    assert label_sources(new) == [{"id": TEACHER, "kind": "teacher"}, {"id": "human:alice", "kind": "human"},
                                  {"id": "human:bob", "kind": "human"}]
    assert new.n_segments == S + 2
    # the new segments (episode, step within the episode, H) get global starts
    assert new.segment_start[S] == old.episode_start[e] + t and new.segment_episode[S] == e
    assert new.segment_start[S + 1] == old.episode_start[e2] + t2 and list(new.segment_length[S:]) == [H, H]
    np.testing.assert_array_equal(new.pref_a[P:], [3, S])
    np.testing.assert_array_equal(new.pref_b[P:], [P + 3, S + 1])
    np.testing.assert_array_equal(new.pref_label[P:], [1.0, 0.0])
    assert np.isnan(new.pref_prob[P:]).all()
    np.testing.assert_array_equal(new.pref_source, [0] * P + [1, 2])
    assert new.pref_time[P] == 1738317600.0 and new.pref_time[P + 1] == 1700000000.0
    assert np.isnan(new.pref_time[:P]).all() and np.isnan(new.pref_confidence[P + 1])
    assert new.pref_confidence[P] == pytest.approx(0.8)
    np.testing.assert_array_equal(new.safety_segment[M:], [5, S])
    np.testing.assert_array_equal(new.safety_label[M:], [[0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(new.safety_single, [False] * M + [True, False])
    np.testing.assert_array_equal(new.safety_source[M:], [1, 2])
    # old rows and arrays are kept as they were
    np.testing.assert_array_equal(new.pref_label[:P], old.pref_label)
    np.testing.assert_array_equal(new.safety_label[:M], old.safety_label)
    np.testing.assert_array_equal(new.observations, old.observations)
    # oracle labels of imported rows, from the oracle rewards/costs
    r = np.asarray(old.oracle.rewards, np.float64)
    c = np.asarray(old.oracle.costs, np.float64)
    starts = np.asarray(new.segment_start)

    def ret(s: int) -> float:
        return r[starts[s]:starts[s] + H].sum()

    for k, (a, b) in enumerate(zip(new.pref_a[P:], new.pref_b[P:], strict=True)):
        want = 1.0 if ret(b) > ret(a) else 0.0 if ret(b) < ret(a) else 0.5
        assert new.oracle.pref_label[P + k] == want
    for k, s in enumerate(new.safety_segment[M:]):
        cost = c[starts[s]:starts[s] + H].sum()
        # the scaled rule with T_max = 60
        want = (cost <= np.asarray(new.thresholds, np.float64) * H / 60).astype(np.int8)
        np.testing.assert_array_equal(new.oracle.safety_label[M + k], want)
    assert new.oracle.segment_return[S] == pytest.approx(ret(S), rel=1e-5)
    assert new.metadata["preferences"]["n"] == P + 2 and new.metadata["safety"]["n"] == M + 2
    imp = new.metadata["imports"][-1]
    assert imp["from_store_id"] == old.store_id and imp["file"] == "labels.csv"
    assert imp["sources"] == {"human:alice": {"preferences": 1, "safety": 1},
                              "human:bob": {"preferences": 1, "safety": 1}}
    # a second import goes to -v3 and keeps the sources
    f2 = write(tmp_path / "more.jsonl",
               json.dumps({"source": "carol", "a": 4, "b": P + 4, "label": 0.5}) + "\n")
    res3 = import_labels(res.path, f2)
    assert res3.path.name == "tiny-v3.zarr" and res3.store_id.endswith("-v3")
    assert [s["id"] for s in label_sources(open_store(res3.path))][-1] == "human:carol"


def test_every_problem_is_reported_by_line_and_nothing_is_written(tiny_store: Path, tmp_path: Path) -> None:
    data = open_store(tiny_store)
    S, E = data.n_segments, data.n_episodes
    short = int(np.flatnonzero(data.episode_length < 20)[0])
    a0, b0 = int(data.pref_a[0]), int(data.pref_b[0])
    f = write(tmp_path / "bad.csv",
              "kind,source,time,confidence,a,b,label,segment,safe,safe@10,episode,start,length\n"  # 1
              "preference,alice,,,0,1,1,,,,,,\n"                                  # 2 ok
              f"preference,alice,,,{S},1,1,,,,,,\n"                                # 3 id out of range
              "preference,alice,,,2,3,0.7,,,,,,\n"                                 # 4 bad label
              "preference,,,,2,3,1,,,,,,\n"                                        # 5 no source
              "preference,alice,,,1,0,0,,,,,,\n"                                   # 6 duplicate of 2 (b, a)
              f"preference,{TEACHER},,,{b0},{a0},1,,,,,,\n"                        # 7 duplicate in store
              "preference,alice,,,4,4,1,,,,,,\n"                                   # 8 a == b
              "preference,alice,yesterday,,5,6,1,,,,,,\n"                          # 9 bad time
              "preference,alice,,1.5,5,6,1,,,,,,\n"                                # 10 bad confidence
              "safety,alice,,,,,,,safe,,,,\n"                                      # 11 no segment
              f"safety,alice,,,,,,,unsafe,,{E},0,20\n"                             # 12 episode out of range
              f"safety,alice,,,,,,,unsafe,,{short},0,20\n"                         # 13 not inside the episode
              "safety,alice,,,,,,,unsafe,,0,0,15\n"                                # 14 wrong length
              "safety,alice,,,,,,3,maybe,,,,\n"                                    # 15 bad safe value
              "safety,alice,,,,,,3,safe,1,,,\n"                                    # 16 safe and safe@
              "safety,alice,,,,,,3\n"                                              # 17 wrong field count
              "safety,alice,,,,,,7,safe,,,,\n"                                     # 18 ok
              "safety,alice,,,,,,7,unsafe,,,,\n"                                   # 19 duplicate of 18
              "thing,alice,,,,,,7,unsafe,,,,\n")                                   # 20 bad kind
    before = sorted(p.name for p in tiny_store.parent.iterdir())
    with pytest.raises(LabelImportError) as info:
        import_labels(tiny_store, f)
    lines = [int(p.split(":")[0].removeprefix("line ")) for p in info.value.problems]
    assert lines == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 19, 20]
    text = "\n".join(info.value.problems)
    for fragment in ("out of range", "label must be 0, 0.5 or 1", "source is missing", "duplicate",
                     "already labelled", "same segment", "neither unix seconds nor ISO", "confidence",
                     f"episode {E} is out of range", "not inside episode", "differs from the store's segment "
                     "length H = 20", "safe/unsafe", "not both", "fields, the header has", "kind must be"):
        assert fragment in text, fragment
    assert "\n" not in str(info.value) and "17 problems" in str(info.value)
    assert "nothing was written" in str(info.value)
    assert sorted(p.name for p in tiny_store.parent.iterdir()) == before


def test_json_lines_and_header_problems(tiny_store: Path, tmp_path: Path) -> None:
    f = write(tmp_path / "bad.jsonl",
              json.dumps({"source": "a", "a": 0, "b": 1, "label": 1}) + "\n"
              "{not json\n"
              "\n"
              + json.dumps({"source": "a", "a": 0, "b": 2, "label": 1, "colour": "red"}) + "\n"
              + json.dumps({"source": "a", "segment": 1, "safe": {"10": 1, "20": 0}}) + "\n"
              + json.dumps({"source": "a", "segment": 2, "safe": [1, 0]}) + "\n"
              + json.dumps({"source": "a b", "segment": 3, "safe": 1}) + "\n")
    with pytest.raises(LabelImportError) as info:
        import_labels(tiny_store, f)
    probs = info.value.problems
    assert [p.split(":")[0] for p in probs] == ["line 2", "line 4", "line 5", "line 6", "line 7"]
    assert "not valid JSON" in probs[0] and "colour" in probs[1] and "safe@5 missing" in probs[2]
    assert "one value per threshold" in probs[3] and "not a valid name" in probs[4]
    bad_header = write(tmp_path / "h.csv", "source,a,b,lable\nalice,0,1,1\n")
    with pytest.raises(LabelImportError) as info:
        import_labels(tiny_store, bad_header)
    assert info.value.problems[0].startswith("line 1: unknown column 'lable'")
    with pytest.raises(FeedbackgenError, match="does not exist"):
        import_labels(tiny_store, tmp_path / "missing.csv")
    empty = write(tmp_path / "e.csv", "source,a,b,label\n")
    with pytest.raises(FeedbackgenError, match="holds no label rows"):
        import_labels(tiny_store, empty)


def test_out_in_place_and_overwrite(tiny_store: Path, tmp_path: Path) -> None:
    f = write(tmp_path / "l.csv", "source,a,b,label\nalice,0,1,1\n")
    out = tmp_path / "x.zarr"
    import_labels(tiny_store, f, out=out)
    with pytest.raises(FeedbackgenError, match="already exists"):
        import_labels(tiny_store, f, out=out)
    import_labels(tiny_store, f, out=out, overwrite=True)
    with pytest.raises(FeedbackgenError, match="--in-place"):
        import_labels(tiny_store, f, out=tiny_store)
    sid = open_store(tiny_store).store_id
    res = import_labels(tiny_store, f, in_place=True)
    assert res.path == tiny_store and open_store(tiny_store).store_id == bump_version(sid)
    assert not [p for p in tiny_store.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_journal_undo_and_cut_last_line(tiny_store: Path, tmp_path: Path) -> None:
    sid = open_store(tiny_store).store_id

    def ans(i: int, a: int, b: int, y: float) -> str:
        return json.dumps({"op": "answer", "id": i, "annotator": "ann", "pair": i,
                           "rows": [{"kind": "preference", "source": "human:ann", "a": a, "b": b,
                                     "label": y}]})
    text = "\n".join([json.dumps({"op": "start", "store_id": sid}), ans(1, 0, 1, 1), ans(2, 2, 3, 0),
                      json.dumps({"op": "undo", "id": 2, "annotator": "ann"}), ans(3, 4, 5, 0.5)])
    j = write(tmp_path / "j.jsonl", text + "\n" + ans(4, 6, 7, 1)[:30])  # a crash cut the last line
    res = import_labels(tiny_store, j)
    assert res.preferences == 2 and any("half-written" in n for n in res.notes)
    new = open_store(res.path)
    np.testing.assert_array_equal(new.pref_a[-2:], [0, 4])
    np.testing.assert_array_equal(new.pref_label[-2:], [1.0, 0.5])
    other = write(tmp_path / "o.jsonl",
                  json.dumps({"op": "start", "store_id": "x/y-v1"}) + "\n" + ans(1, 0, 1, 1))
    with pytest.raises(LabelImportError) as info:
        import_labels(tiny_store, other, out=tmp_path / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()
    assert "written for store x/y-v1" in info.value.problems[0]


def _hand_store(tiny_store: Path, tmp_path: Path) -> Path:
    """alice and bob label the same six pairs and three segments (bob gives one pair as (b, a))."""
    P = int(open_store(tiny_store).pref_a.shape[0])
    alice = [1, 0, 1, 1, 0, 0.5]
    bob = [1, 0, 0, 1, 0, 0.5]
    rows = []
    for i, (x, y) in enumerate(zip(alice, bob, strict=True)):
        rows.append({"source": "alice", "a": i, "b": P + i, "label": x})
        if i == 0:  # the same pair in the other order: P(a ≻ b) = 1 - y
            rows.append({"source": "bob", "a": P + i, "b": i, "label": 1 - y})
        else:
            rows.append({"source": "bob", "a": i, "b": P + i, "label": y})
    for s, (x, y) in enumerate(zip([1, 1, 0], [1, 0, 0], strict=True)):
        rows.append({"source": "alice", "segment": 100 + s, "safe": x})
        rows.append({"source": "bob", "segment": 100 + s, "safe": y})
    f = write(tmp_path / "hand.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    return import_labels(tiny_store, f).path


def test_source_statistics_kappa_by_hand(tiny_store: Path, tmp_path: Path) -> None:
    path = _hand_store(tiny_store, tmp_path)
    stats = source_statistics(open_store(path))
    by_id = {s["id"]: s for s in stats["sources"]}
    assert by_id["human:alice"]["preferences"] == 6 and by_id["human:alice"]["safety"] == 3
    assert by_id["human:bob"]["single_judgements"] == 3 and by_id[TEACHER]["preferences"] == 200
    pair = {(p["a"], p["b"], p["channel"]): p for p in stats["pairs"]}
    pref = pair[("human:alice", "human:bob", "preferences")]
    # po = 5/6; alice 1,0,½ = 3,2,1 and bob 2,3,1 of 6 -> pe = (3·2 + 2·3 + 1·1)/36 = 13/36; κ = 17/23
    assert pref["n"] == 6 and pref["agreement"] == pytest.approx(5 / 6)
    assert pref["kappa"] == pytest.approx(17 / 23)
    saf = pair[("human:alice", "human:bob", "safety")]
    # single judgements cover 3 thresholds: alice 1,1,0 and bob 1,0,0 -> 9 cells,
    # po = 6/9, pe = (6·3 + 3·6)/81 = 36/81; κ = (54 − 36)/(81 − 36) = 0.4
    assert (saf["n"], saf["segments"]) == (9, 3)
    assert saf["agreement"] == pytest.approx(6 / 9) and saf["kappa"] == pytest.approx(0.4)
    # agreement with the oracle, as computed by hand from the stored oracle labels
    data = open_store(path)
    P = 200
    o = np.asarray(data.oracle.pref_label)[P:]
    y = np.asarray(data.pref_label)[P:]
    src = np.asarray(data.pref_source)[P:]
    for name, idx in (("human:alice", 1), ("human:bob", 2)):
        m = (src == idx) & (o[:] != 0.5)
        want = float(np.mean(y[m] == o[m])) if m.any() else None
        assert by_id[name]["preference_agreement"] == want
    teacher_human = pair[(TEACHER, "human:alice", "preferences")]
    assert teacher_human["n"] == 6


def test_kappa_undefined_is_none(tiny_store: Path, tmp_path: Path) -> None:
    f = write(tmp_path / "k.csv", "source,a,b,label\nalice,0,1,1\nbob,0,1,1\n")
    stats = source_statistics(open_store(import_labels(tiny_store, f).path))
    pref = [p for p in stats["pairs"] if p["a"] == "human:alice"][0]
    assert pref["agreement"] == 1.0 and pref["kappa"] is None


def test_safe_at_columns_and_rows_made_in_code(tiny_store: Path) -> None:
    """safe@κ columns fill each threshold by its value and a missing one is named; rows made in
    code without their segments are reported as problems of their lines, not a crash."""
    from feedbackgen.labels import LabelRow, SegmentRef, add_labels, parse_record

    data = open_store(tiny_store, lazy=True)
    th = np.asarray(data.thresholds[...], np.float64)
    assert th.size >= 2
    cols = {f"safe@{t:g}": k % 2 for k, t in enumerate(th)}
    row = parse_record({"source": "alice", "segment": 3, **dict(reversed(cols.items()))}, 1, th)
    assert row.safe == [k % 2 for k in range(th.size)] and not row.single
    del cols[f"safe@{th[-1]:g}"]
    with pytest.raises(ValueError, match=f"safe@{th[-1]:g} missing"):
        parse_record({"source": "alice", "segment": 3, **cols}, 1, th)
    alice = {"source": "human:alice", "source_kind": "human"}
    rows = [LabelRow(line=1, kind="preference", a=SegmentRef(id=0), label=1.0, **alice),
            LabelRow(line=2, kind="safety", safe=[1] * th.size, **alice),
            LabelRow(line=3, kind="safety", segment=SegmentRef(episode=0), safe=[1] * th.size, **alice)]
    with pytest.raises(LabelImportError) as info:
        add_labels(data, rows)
    assert [p.split(":")[0] for p in info.value.problems] == ["line 1", "line 2", "line 3"]
    assert "needs both segments" in info.value.problems[0] and "needs its segment" in info.value.problems[1]
    assert "needs a segment id, or all of episode, start and length" in info.value.problems[2]


def test_store_without_sources_is_all_teacher(tiny_store: Path) -> None:
    data = open_store(tiny_store)
    assert data.pref_source is None and data.frame_index is None
    assert label_sources(data) == [{"id": TEACHER, "kind": "teacher"}]
    pm, sm = select_sources(data, ["teacher"])
    assert pm.all() and sm.all()
    with pytest.raises(FeedbackgenError, match="matches nothing"):
        select_sources(data, ["human"])


def test_validate_checks_optional_arrays(tiny_store: Path, tmp_path: Path) -> None:
    data = open_store(_hand_store(tiny_store, tmp_path))
    data.pref_source = np.asarray(data.pref_source).copy()
    data.pref_source[0] = 17
    data.safety_confidence = np.asarray(data.safety_confidence).copy()
    data.safety_confidence[0] = 2.0
    data.safety_time = None
    data.safety_single = np.ones(data.safety_segment.shape[0], bool)
    data.frame_index = np.asarray([5, 3])
    data.frame_images = np.zeros((2, 4, 4, 3), np.uint8)
    bad = write_store(tmp_path / "bad.zarr", data)
    problems = "\n".join(validate_store(bad).problems)
    assert "preferences/source has indices outside [0, 3)" in problems
    assert "preferences/confidence" not in problems and "safety/time" in problems
    assert "safety/single rows must have the same label" in problems
    assert "frames/index must be strictly increasing" in problems


def test_training_selects_rows_by_source(tiny_store: Path, tmp_path: Path) -> None:
    from presa.config import TrainConfig
    from presa.data import TrainingData

    path = _hand_store(tiny_store, tmp_path)
    full = TrainingData.from_store(path, threshold=10.0, gamma=0.99)
    # the store's last 20 teacher pairs and 15 safety rows are its validation split; imported rows train
    assert full.n_pairs == 212 - 20 and full.n_safety == 156 - 15
    assert full.val is not None and (full.val.n_pairs, full.val.n_safety) == (20, 15)
    human = TrainingData.from_store(path, threshold=10.0, gamma=0.99, label_sources=["human"])
    assert human.n_pairs == 12 and human.n_safety == 6 and human.val is None
    store = open_store(path)
    np.testing.assert_array_equal(human.pref_a.numpy(), np.asarray(store.pref_a)[200:])
    np.testing.assert_array_equal(human.pref_label.numpy(), np.asarray(store.pref_label)[200:])
    np.testing.assert_array_equal(human.safety_segment.numpy(), np.asarray(store.safety_segment)[150:])
    alice = TrainingData.from_store(path, threshold=10.0, gamma=0.99, label_sources=["human:alice"])
    assert alice.n_pairs == 6 and alice.safety_label.tolist() == [1.0, 1.0, 0.0]
    teacher = TrainingData.from_store(path, threshold=10.0, gamma=0.99,
                                      label_sources=list(TrainConfig(label_sources=("teacher",)).label_sources))
    np.testing.assert_array_equal(teacher.pref_label.numpy(), np.asarray(store.pref_label)[:180])
    np.testing.assert_array_equal(teacher.val.pref_label.numpy(), np.asarray(store.pref_label)[180:200])
    mixed = TrainingData.from_store(path, threshold=10.0, gamma=0.99, label_sources=["bob", TEACHER])
    assert mixed.n_pairs == 206 - 20
    with pytest.raises(FeedbackgenError, match="matches nothing"):
        TrainingData.from_store(path, threshold=10.0, gamma=0.99, label_sources=["human:zoe"])
    with pytest.raises(FeedbackgenError, match="select no preference labels"):
        _no_pairs(path)
    assert math.isfinite(float(human.seg_weight.sum()))


def _no_pairs(path: Path) -> None:
    """A store whose human source has safety rows but no pairs cannot train on 'human' alone."""
    from presa.data import TrainingData

    folder = path.parent / "only-safety"
    folder.mkdir()
    f = write(folder / "s.csv", "source,segment,safe\ndora,4,1\n")
    p2 = import_labels(path, f, out=folder / "s.zarr").path
    TrainingData.from_store(p2, threshold=10.0, gamma=0.99, label_sources=["human:dora"])
