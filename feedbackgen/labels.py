"""Labels from people (and other tools): import into a store, statistics per source, selection.

A store records where each label came from (optional arrays of schema version 1, see
:mod:`feedbackgen.store`): ``preferences/source`` and ``safety/source`` index the metadata list
``label_sources`` (``{"id": "human:alice", "kind": "human"}``), with a unix time and a confidence
per row. A store without them (every store ``feedbackgen make`` writes) has all its labels from
the synthetic teacher in its metadata, whose source id is :func:`teacher_source_id`
(``teacher:oracle+mistake``).

**Import file** (``feedbackgen import-labels STORE --from FILE``): CSV with a header line, or JSON
lines (one object per line; ``.jsonl``/``.ndjson``/``.json``, or any file whose first character is
``{``). Line numbers count every line of the file (a CSV header is line 1). Fields:

=============  ====================================================================================
``kind``       ``preference`` or ``safety``; may be left out when the other fields say which
``source``     annotator or teacher: ``human:NAME``, ``teacher:NAME``, or a bare ``NAME`` (a person)
``time``       unix seconds or ISO 8601 (``2025-01-31T10:00:00Z``; no zone = UTC); optional
``confidence`` a number in [0, 1]; optional
``a``, ``b``   (preference) segment ids, or ``a_episode``/``a_start``/``a_length`` and the same for
               ``b`` (JSON: also ``"a": {"episode": E, "start": T, "length": H}`` or ``[E, T, H]``)
``label``      (preference) y = P(b ≻ a): ``1`` (b better), ``0`` (a better), ``0.5`` (equal);
               also ``b``, ``a``, ``equal``
``segment``    (safety) segment id, or ``episode``/``start``/``length``
``safe``       (safety) one judgement for every threshold: ``1``/``0``, ``safe``/``unsafe``,
               ``true``/``false``; or one column ``safe@κ`` per threshold of the store (``safe@10``,
               ``safe@20``, ...; JSON: ``"safe": {"10": 1, "20": 0}`` or a list in threshold order)
=============  ====================================================================================

A segment given as (episode, start, length) uses **start = the step within the episode**
(0-based); the length must equal the store's segment length H (every store has one H, which the
scaled safety rule and training assume). Such a segment is matched to an existing one when the
table has it, else appended to the segment table. Segment ids must exist; a pair compares two
different segments; one source may label a pair (in either order) or a segment only once, in the
file and in the store. Every problem is reported with its line number, and nothing is written
unless the whole file is clean.

A JSON-lines **annotation journal** (written by ``feedbackgen annotate``) is read by the same
function: its ``{"op": "answer", "id": N, "rows": [...]}`` lines carry rows in the format above,
``{"op": "undo", "id": N}`` withdraws an answer, and a line cut off by a crash is ignored.

The result is a new store version (store id ``...-vN`` becomes ``...-vN+1``), written atomically;
with an ``oracle`` group, the noise-free labels of imported rows are computed from it. In a store
with a validation split (``preferences/split``, ``safety/split``) imported rows are training rows.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from feedbackgen._io import sha256_file
from feedbackgen.errors import FeedbackgenError
from feedbackgen.store import FeedbackData, OracleData, open_store, split_columns, write_store

HUMAN, TEACHER, ALL = "human", "teacher", "all"
SOURCE_KINDS = (TEACHER, HUMAN)
_NAME_RE = re.compile(r"^[\w.@+=:/-]{1,80}$")
_TRUE = {"1", "1.0", "true", "safe", "yes", "y"}
_FALSE = {"0", "0.0", "false", "unsafe", "no", "n"}
_PREF_WORDS = {"a": 0.0, "b": 1.0, "equal": 0.5, "tie": 0.5}
_REF_KEYS = ("episode", "start", "length")
_COMMON_KEYS = {"kind", "source", "time", "confidence"}
_PREF_KEYS = {"a", "b", "label"} | {f"{s}_{k}" for s in "ab" for k in _REF_KEYS}
_SAFETY_KEYS = {"segment", "safe", *_REF_KEYS}


class LabelImportError(FeedbackgenError):
    """A label file with problems: ``str(exc)`` is the one-line summary, ``problems`` the details
    (``"line N: ..."``, in file order)."""

    def __init__(self, summary: str, problems: list[str]):
        super().__init__(summary)
        self.problems = list(problems)


# ------------------------------------------------------------------------------------------------
# sources


def teacher_source_id(metadata: dict) -> str:
    """The source id of a store's synthetic teacher, e.g. ``teacher:oracle+mistake``.

    Example:
        >>> teacher_source_id({"preferences": {"teacher_text": "bt:beta=1", "noise": 0.1}})
        'teacher:bt:beta=1+mistake'
    """
    pref = metadata.get("preferences", {}) if isinstance(metadata, dict) else {}
    text = str(pref.get("teacher_text") or "synthetic")
    if (pref.get("noise") or 0) > 0 and "mistake" not in text:
        text += "+mistake"
    return f"teacher:{text}"


def normalize_source(text: Any) -> tuple[str, str]:
    """``(id, kind)`` of a source as written in a label file: ``human:alice``, ``teacher:x``, ``alice``.

    Raises:
        FeedbackgenError: an empty name or one with characters other than letters, digits and
            ``_ . @ + = : / -``.

    Example:
        >>> normalize_source("alice"), normalize_source("teacher:oracle")
        (('human:alice', 'human'), ('teacher:oracle', 'teacher'))
    """
    raw = str(text).strip() if text is not None else ""
    kind, sep, name = raw.partition(":")
    if not sep or kind not in SOURCE_KINDS:
        kind, name = HUMAN, raw
    if not name or not _NAME_RE.match(name):
        raise FeedbackgenError(f"source {raw!r} is not a valid name: use letters, digits and _ . @ + = : / - "
                               "(e.g. 'alice' or 'human:alice' or 'teacher:mytool')")
    return f"{kind}:{name}", kind


def label_sources(data: FeedbackData) -> list[dict[str, str]]:
    """The store's label sources: metadata ``label_sources``, else its synthetic teacher alone."""
    meta = data.metadata if isinstance(data.metadata, dict) else {}
    found = meta.get("label_sources")
    if isinstance(found, list) and found:
        return [{"id": str(s["id"]), "kind": str(s["kind"])} for s in found]
    return [{"id": teacher_source_id(meta), "kind": TEACHER}]


def source_columns(data: FeedbackData) -> tuple[np.ndarray, np.ndarray]:
    """(P,) and (M,) int64 source indices of the preference and safety rows (0s without the arrays)."""
    P, M = int(data.pref_a.shape[0]), int(data.safety_segment.shape[0])
    pref = np.zeros(P, np.int64) if data.pref_source is None else np.asarray(data.pref_source[...], np.int64)
    saf = np.zeros(M, np.int64) if data.safety_source is None else \
        np.asarray(data.safety_source[...], np.int64)
    return pref, saf


def select_sources(data: FeedbackData, wanted: Sequence[str] | str = (ALL,)) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks over the preference and safety rows whose source matches ``wanted``.

    Args:
        data: an opened store.
        wanted: entries ``all``, ``human``, ``teacher`` (kinds) or source ids (``human:alice``;
            a bare name means ``human:NAME``).

    Raises:
        FeedbackgenError: an entry matches no source of the store (names the sources it has).
    """
    if isinstance(wanted, str):
        wanted = [wanted]
    sources = label_sources(data)
    chosen: set[int] = set()
    for w in wanted:
        w = str(w).strip()
        if w == ALL:
            chosen.update(range(len(sources)))
            continue
        if w in SOURCE_KINDS:
            hits = [i for i, s in enumerate(sources) if s["kind"] == w]
        else:
            try:
                sid, _ = normalize_source(w)
            except FeedbackgenError:
                sid = w
            hits = [i for i, s in enumerate(sources) if s["id"] in (w, sid)]
        if not hits:
            have = ", ".join(s["id"] for s in sources)
            raise FeedbackgenError(f"label source {w!r} matches nothing in the store (it has {have}); "
                                   "use all, human, teacher or one of those ids")
        chosen.update(hits)
    pref, saf = source_columns(data)
    idx = np.asarray(sorted(chosen), dtype=np.int64)
    return np.isin(pref, idx), np.isin(saf, idx)


# ------------------------------------------------------------------------------------------------
# parsing


@dataclass(frozen=True)
class SegmentRef:
    """A segment named in a label file: by id, or by (episode, start within episode, length)."""

    id: int | None = None
    episode: int | None = None
    start: int | None = None
    length: int | None = None

    def text(self) -> str:
        if self.id is not None:
            return f"segment {self.id}"
        return f"segment (episode {self.episode}, start {self.start}, length {self.length})"


@dataclass
class LabelRow:
    """One parsed row of a label file (preference or safety)."""

    line: int
    kind: str
    source: str
    source_kind: str
    time: float = math.nan
    confidence: float = math.nan
    a: SegmentRef | None = None
    b: SegmentRef | None = None
    label: float = math.nan
    segment: SegmentRef | None = None
    safe: list[int] = field(default_factory=list)
    single: bool = False


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool):
        raise ValueError(f"{what} must be a whole number, got {v!r}")
    if isinstance(v, int):
        return v
    try:
        f = float(str(v).strip())
    except ValueError:
        raise ValueError(f"{what} must be a whole number, got {v!r}") from None
    if not f.is_integer():
        raise ValueError(f"{what} must be a whole number, got {v!r}")
    return int(f)


def _time(v: Any) -> float:
    if _blank(v):
        return math.nan
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        t = float(v)
    else:
        text = str(v).strip()
        try:
            t = float(text)
        except ValueError:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"time {text!r} is neither unix seconds nor ISO 8601 "
                                 "(e.g. 2025-01-31T10:00:00Z)") from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            t = dt.timestamp()
    if not math.isfinite(t):
        raise ValueError(f"time {v!r} is not finite")
    return t


def _confidence(v: Any) -> float:
    if _blank(v):
        return math.nan
    try:
        c = float(v) if not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        c = math.nan
    if not (0.0 <= c <= 1.0):
        raise ValueError(f"confidence must be a number in [0, 1], got {v!r}")
    return c


def _safe_value(v: Any, what: str) -> int:
    if isinstance(v, bool):
        return int(v)
    text = str(v).strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise ValueError(f"{what} must be safe/unsafe (1/0, true/false), got {v!r}")


def _pref_label(v: Any) -> float:
    if _blank(v):
        raise ValueError("label is missing (1: b better, 0: a better, 0.5: equal)")
    text = str(v).strip().lower()
    if text in _PREF_WORDS:
        return _PREF_WORDS[text]
    try:
        y = float(text) if not isinstance(v, bool) else math.nan
    except ValueError:
        y = math.nan
    if y not in (0.0, 0.5, 1.0):
        raise ValueError(f"label must be 0, 0.5 or 1 (y = P(b ≻ a)), or a/b/equal, got {v!r}")
    return y


def _segment_ref(d: dict, key: str, prefix: str) -> SegmentRef:
    """A segment from ``d[key]`` (id, dict or [e, s, l]) or from ``<prefix>episode/start/length``."""
    v = d.get(key)
    parts = {k: d.get(f"{prefix}{k}") for k in _REF_KEYS}
    given_parts = [k for k, x in parts.items() if not _blank(x)]
    if isinstance(v, dict):
        parts, given_parts = {k: v.get(k) for k in _REF_KEYS}, [k for k in _REF_KEYS if not _blank(v.get(k))]
        v = None
    elif isinstance(v, (list, tuple)):
        if len(v) != 3:
            raise ValueError(f"{key} as a list must be [episode, start, length], got {v!r}")
        parts, given_parts, v = dict(zip(_REF_KEYS, v, strict=True)), list(_REF_KEYS), None
    if not _blank(v):
        if given_parts:
            raise ValueError(f"give {key} either as a segment id or as {prefix}episode/start/length, "
                             "not both")
        return SegmentRef(id=_int(v, f"segment id {key}"))
    if not given_parts:
        names = f"{key} (segment id) or {prefix}episode, {prefix}start, {prefix}length"
        raise ValueError(f"{names} missing")
    missing = [f"{prefix}{k}" for k in _REF_KEYS if k not in given_parts]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing (a segment needs episode, start and length)")
    return SegmentRef(episode=_int(parts["episode"], f"{prefix}episode"),
                      start=_int(parts["start"], f"{prefix}start"),
                      length=_int(parts["length"], f"{prefix}length"))


def _safe_labels(d: dict, thresholds: np.ndarray) -> tuple[list[int], bool]:
    """(labels per threshold, single) from ``safe`` or ``safe@κ`` fields."""
    per = {k: v for k, v in d.items() if isinstance(k, str) and k.startswith("safe@") and not _blank(v)}
    v = d.get("safe")
    K = len(thresholds)
    if isinstance(v, dict):
        per, v = {f"safe@{k}": x for k, x in v.items()}, None
    elif isinstance(v, (list, tuple)):
        if len(v) != K:
            raise ValueError(f"safe as a list needs one value per threshold ({K}: "
                             f"{', '.join(f'{t:g}' for t in thresholds)}), got {len(v)}")
        return [_safe_value(x, "safe") for x in v], False
    if not _blank(v):
        if per:
            raise ValueError("give safe (one judgement) or safe@κ columns (one per threshold), not both")
        s = _safe_value(v, "safe")
        return [s] * K, True
    if not per:
        raise ValueError("safe is missing (safe/unsafe, or one safe@κ per threshold)")
    out: dict[int, int] = {}  # threshold index -> label
    for k, x in per.items():
        try:
            kappa = float(k[len("safe@"):])
        except ValueError:
            raise ValueError(f"column {k!r}: expected safe@<threshold>, "
                             f"e.g. safe@{thresholds[0]:g}") from None
        hit = np.flatnonzero(np.isclose(thresholds, kappa))
        if hit.size == 0:
            raise ValueError(f"{k}: the store has no threshold {kappa:g} (it has "
                             f"{', '.join(f'{t:g}' for t in thresholds)})")
        out[int(hit[0])] = _safe_value(x, k)
    missing = [f"safe@{thresholds[i]:g}" for i in range(K) if i not in out]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing (give every threshold, or one safe judgement)")
    return [out[i] for i in range(K)], False


def parse_record(d: dict, line: int, thresholds: np.ndarray, *, strict_keys: bool = True) -> LabelRow:
    """Parse one record (a CSV row as a dict of strings, or a JSON object).

    Raises:
        ValueError: with a message (without the line number) saying what is wrong.
    """
    if not isinstance(d, dict):
        raise ValueError(f"expected an object with label fields, got {type(d).__name__}")
    d = {str(k).strip(): v for k, v in d.items() if k is not None}
    kind = str(d.get("kind") or "").strip().lower()
    if kind in ("pref", "preferences"):
        kind = "preference"
    if not kind:
        has_pref = any(not _blank(d.get(k)) for k in _PREF_KEYS)
        has_safe = any(not _blank(d.get(k)) for k in _SAFETY_KEYS) or \
            any(k.startswith("safe@") and not _blank(v) for k, v in d.items())
        if has_pref == has_safe:
            raise ValueError("cannot tell a preference row (a, b, label) from a safety row (segment, safe); "
                             "add kind=preference or kind=safety")
        kind = "preference" if has_pref else "safety"
    if kind not in ("preference", "safety"):
        raise ValueError(f"kind must be preference or safety, got {d.get('kind')!r}")
    if strict_keys:
        allowed = _COMMON_KEYS | (_PREF_KEYS if kind == "preference" else _SAFETY_KEYS)
        extra = sorted(k for k, v in d.items() if k not in allowed and not k.startswith("safe@")
                       and not _blank(v))
        if kind == "preference":
            extra += sorted(k for k, v in d.items() if k.startswith("safe@") and not _blank(v))
        if extra:
            raise ValueError(f"unexpected field{'s' if len(extra) > 1 else ''} {', '.join(extra)} "
                             f"in a {kind} row")
    if _blank(d.get("source")):
        raise ValueError("source is missing (annotator id like 'alice' or 'human:alice', or 'teacher:NAME')")
    try:
        source, source_kind = normalize_source(d.get("source"))
    except FeedbackgenError as exc:
        raise ValueError(str(exc)) from None
    row = LabelRow(line=line, kind=kind, source=source, source_kind=source_kind, time=_time(d.get("time")),
                   confidence=_confidence(d.get("confidence")))
    if kind == "preference":
        row.a = _segment_ref(d, "a", "a_")
        row.b = _segment_ref(d, "b", "b_")
        row.label = _pref_label(d.get("label"))
    else:
        row.segment = _segment_ref(d, "segment", "")
        row.safe, row.single = _safe_labels(d, thresholds)
    return row


def _sniff_jsonl(path: Path, text: str) -> bool:
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return True
    if path.suffix.lower() in (".csv", ".tsv"):
        return False
    return text.lstrip().startswith("{")


def read_label_file(path: str | Path, thresholds: Sequence[float] | np.ndarray, *,
                    store_id: str | None = None) -> tuple[list[LabelRow], list[str], list[str]]:
    """Parse a label file (CSV, JSON lines, or an annotation journal).

    Args:
        path: the file.
        thresholds: the store's thresholds (for ``safe@κ`` columns and single judgements).
        store_id: the store's id; a journal written for another store is refused.

    Returns:
        ``(rows, problems, notes)``: the parsed rows, every problem as ``"line N: ..."``, and
        notes that are not errors (e.g. an ignored half-written last journal line).

    Raises:
        FeedbackgenError: the file does not exist, is not UTF-8 text, or holds no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FeedbackgenError(f"label file {path} does not exist; pass an existing CSV or JSON-lines file "
                               "with --from")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedbackgenError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV or "
                               "JSON lines") from None
    th = np.asarray(thresholds, dtype=np.float64)
    rows: list[LabelRow] = []
    problems: list[str] = []
    notes: list[str] = []
    if _sniff_jsonl(path, text):
        _read_jsonl(text, th, rows, problems, notes, store_id)
    else:
        _read_csv(text, th, rows, problems)
    if not rows and not problems:
        raise FeedbackgenError(f"{path} holds no label rows; see `feedbackgen import-labels --help` for "
                               "the columns")
    return rows, problems, notes


def _read_csv(text: str, th: np.ndarray, rows: list[LabelRow], problems: list[str]) -> None:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        problems.append(f"line 1: not readable as CSV ({exc})")
        return
    header = [h.strip() for h in header]
    known = _COMMON_KEYS | _PREF_KEYS | _SAFETY_KEYS
    bad = [h for h in header if h and h not in known and not h.startswith("safe@")]
    if bad or not any(header):
        problems.append(f"line 1: unknown column{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}; "
                        f"known: {', '.join(sorted(known))}, safe@<threshold>" if bad else
                        "line 1: the header is empty; the first line must name the columns")
        return
    dup = sorted({h for h in header if h and header.count(h) > 1})
    if dup:
        problems.append(f"line 1: repeated column{'s' if len(dup) > 1 else ''} {', '.join(dup)}")
        return
    line = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"line {line}: not readable as CSV ({exc})")
            break
        this, line = line, reader.line_num + 1
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(f"line {this}: {len(values)} fields, the header has {len(header)}")
            continue
        try:
            rows.append(parse_record(dict(zip(header, values, strict=True)), this, th, strict_keys=False))
        except ValueError as exc:
            problems.append(f"line {this}: {exc}")


def _read_jsonl(text: str, th: np.ndarray, rows: list[LabelRow], problems: list[str], notes: list[str],
                store_id: str | None) -> None:
    lines = text.split("\n")
    answers: dict[tuple[str, int], list[LabelRow]] = {}
    journal = False
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            if journal:  # the server writes whole lines; a broken one was cut by a crash: that answer is lost
                notes.append(f"line {i}: ignored a half-written line (the answer being saved when the "
                             "annotation server stopped)")
                continue
            problems.append(f"line {i}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if isinstance(obj, dict) and "op" in obj:
            journal = True
            _journal_line(obj, i, th, answers, problems, store_id)
            continue
        try:
            rows.append(parse_record(obj, i, th))
        except ValueError as exc:
            problems.append(f"line {i}: {exc}")
    for answer_rows in answers.values():
        rows.extend(answer_rows)
    rows.sort(key=lambda r: r.line)


def _journal_line(obj: dict, line: int, th: np.ndarray, answers: dict, problems: list[str],
                  store_id: str | None) -> None:
    op = obj.get("op")
    who = str(obj.get("annotator", ""))
    if op == "start":
        if store_id is not None and obj.get("store_id") not in (None, store_id):
            problems.append(f"line {line}: this journal was written for store {obj.get('store_id')}, "
                            f"not {store_id}; import it into that store")
        return
    if op == "answer":
        try:
            key = (who, _int(obj.get("id"), "answer id"))
            recs = obj.get("rows")
            if not isinstance(recs, list) or not recs:
                raise ValueError("an answer needs a non-empty list of rows")
            answers[key] = [parse_record(r, line, th) for r in recs]
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
        return
    if op == "undo":
        try:
            key = (who, _int(obj.get("id"), "answer id"))
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
            return
        if answers.pop(key, None) is None:
            problems.append(f"line {line}: undo of answer {key[1]} by {who!r}, which is not in the journal")
        return
    problems.append(f"line {line}: unknown journal op {op!r} (expected start, answer or undo)")


# ------------------------------------------------------------------------------------------------
# applying rows to a store


@dataclass
class ImportResult:
    """What :func:`import_labels` wrote."""

    path: Path
    store_id: str
    from_store_id: str
    preferences: int
    safety: int
    new_segments: int
    sources: list[str]
    notes: list[str] = field(default_factory=list)


def _segment_length(data: FeedbackData) -> int:
    seg = data.metadata.get("segments", {}) if isinstance(data.metadata, dict) else {}
    h = seg.get("resolved_length", seg.get("length"))
    if isinstance(h, int) and h > 0:
        return h
    lengths = np.asarray(data.segment_length[...])
    return int(lengths.max()) if lengths.size else 1


class _Resolver:
    """Maps segment references to ids of the (growing) segment table, collecting problems."""

    def __init__(self, data: FeedbackData):
        self.S = data.n_segments
        self.ep_start = np.asarray(data.episode_start[...], np.int64)
        self.ep_len = np.asarray(data.episode_length[...], np.int64)
        self.H = _segment_length(data)
        starts = np.asarray(data.segment_start[...], np.int64)
        lengths = np.asarray(data.segment_length[...], np.int64)
        self.by_window: dict[tuple[int, int], int] = {}
        for i in range(starts.size - 1, -1, -1):  # the first id wins when the table repeats a window
            self.by_window[(int(starts[i]), int(lengths[i]))] = i
        self.new: list[tuple[int, int, int]] = []  # (episode, global start, length)

    def resolve(self, ref: SegmentRef) -> int:
        """The segment id of ``ref`` (appending a new segment when needed). Raises ValueError."""
        if ref.id is not None:
            if not 0 <= ref.id < self.S:
                raise ValueError(f"segment id {ref.id} is out of range (the store has {self.S} segments, "
                                 f"ids 0..{self.S - 1})")
            return ref.id
        E = self.ep_start.size
        e, off, length = ref.episode, ref.start, ref.length
        if e is None or off is None or length is None:
            raise ValueError(f"{ref.text()} needs a segment id, or all of episode, start and length")
        if not 0 <= e < E:
            raise ValueError(f"episode {e} is out of range (the store has {E} episodes, ids 0..{E - 1})")
        if length != self.H:
            raise ValueError(f"segment length {length} differs from the store's segment length H = {self.H}")
        if off < 0 or off + length > self.ep_len[e]:
            raise ValueError(f"{ref.text()} is not inside episode {e} (steps 0..{self.ep_len[e] - 1}); "
                             "start is the step within the episode")
        key = (int(self.ep_start[e] + off), int(length))
        if key not in self.by_window:
            self.by_window[key] = self.S + len(self.new)
            self.new.append((int(e), key[0], key[1]))
        return self.by_window[key]


def add_labels(data: FeedbackData, rows: Iterable[LabelRow], *, origin: dict[str, Any] | None = None,
               problems: list[str] | None = None) -> FeedbackData:
    """A new version of ``data`` (in memory; transitions stay lazy) with ``rows`` appended.

    Args:
        data: the store, opened (lazily or not).
        rows: parsed rows (see :func:`read_label_file`).
        origin: recorded in ``metadata.imports`` (file name, hash, ...).
        problems: problems found while parsing (``"line N: ..."``); resolution problems are added.

    Raises:
        LabelImportError: any problem, each with its line number; ``data`` is not changed.
    """
    rows = list(rows)
    problems = list(problems or [])
    res = _Resolver(data)
    K = int(data.thresholds.shape[0])
    sources = label_sources(data)
    source_index = {s["id"]: i for i, s in enumerate(sources)}
    old_pref_src, old_saf_src = source_columns(data)
    old_a = np.asarray(data.pref_a[...], np.int64)
    old_b = np.asarray(data.pref_b[...], np.int64)
    old_seg = np.asarray(data.safety_segment[...], np.int64)
    seen_pairs: dict[tuple[str, int, int], str] = {}
    for i, (a, b) in enumerate(zip(old_a, old_b, strict=True)):
        seen_pairs.setdefault((sources[old_pref_src[i]]["id"], min(a, b), max(a, b)), f"store pair row {i}")
    seen_segs: dict[tuple[str, int], str] = {}
    for i, s in enumerate(old_seg):
        seen_segs.setdefault((sources[old_saf_src[i]]["id"], int(s)), f"store safety row {i}")
    prefs: list[tuple[LabelRow, int, int]] = []
    safes: list[tuple[LabelRow, int]] = []
    for row in rows:
        try:
            if row.kind == "preference":
                if row.a is None or row.b is None:
                    raise ValueError("a preference row needs both segments a and b")
                a, b = res.resolve(row.a), res.resolve(row.b)
                if a == b:
                    raise ValueError(f"a and b are the same segment ({a}); a pair compares two segments")
                key = (row.source, min(a, b), max(a, b))
                if key in seen_pairs:
                    raise ValueError(f"duplicate: {row.source} already labelled the pair of segments {a} and "
                                     f"{b} ({seen_pairs[key]})")
                seen_pairs[key] = f"line {row.line}"
                prefs.append((row, a, b))
            else:
                if len(row.safe) != K:
                    raise ValueError(f"safe has {len(row.safe)} values, the store has {K} thresholds")
                if row.segment is None:
                    raise ValueError("a safety row needs its segment")
                s = res.resolve(row.segment)
                key2 = (row.source, s)
                if key2 in seen_segs:
                    raise ValueError(f"duplicate: {row.source} already judged the safety of segment {s} "
                                     f"({seen_segs[key2]})")
                seen_segs[key2] = f"line {row.line}"
                safes.append((row, s))
        except ValueError as exc:
            problems.append(f"line {row.line}: {exc}")
    if problems:
        problems.sort(key=_line_of)
        first = problems[0]
        raise LabelImportError(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in the label "
                               f"file (first: {first}); fix them and import again; nothing was written",
                               problems)
    if not prefs and not safes:
        raise LabelImportError("the label file holds no answers (every one was undone); nothing was written",
                               [])
    for row in rows:
        if row.source not in source_index:
            source_index[row.source] = len(sources)
            sources.append({"id": row.source, "kind": row.source_kind})
    if len(sources) > np.iinfo(np.int16).max:
        raise FeedbackgenError(f"{len(sources)} label sources exceed the format's limit of 32767")
    return _extended(data, res, prefs, safes, sources, source_index, origin or {})


def _single_column(data: FeedbackData) -> np.ndarray:
    """(M,) bool: True where a safety row is one judgement applied to every threshold."""
    M = int(data.safety_segment.shape[0])
    return np.zeros(M, bool) if data.safety_single is None else np.asarray(data.safety_single[...], bool)


def _line_of(problem: str) -> int:
    m = re.match(r"line (\d+):", problem)
    return int(m.group(1)) if m else 0


def _concat(old: Any, new: np.ndarray, dtype: str) -> np.ndarray:
    return np.concatenate([np.asarray(old[...], dtype=dtype), np.asarray(new, dtype=dtype)])


def _extended(data: FeedbackData, res: _Resolver, prefs: list, safes: list, sources: list[dict],
              source_index: dict[str, int], origin: dict[str, Any]) -> FeedbackData:
    from feedbackgen.quality import compute_quality

    P0, M0 = int(data.pref_a.shape[0]), int(data.safety_segment.shape[0])
    old_pref_src, old_saf_src = source_columns(data)
    new_ep = np.asarray([e for e, _, _ in res.new], np.int32)
    new_start = np.asarray([s for _, s, _ in res.new], np.int64)
    new_len = np.asarray([h for _, _, h in res.new], np.int32)
    seg_ep = _concat(data.segment_episode, new_ep, "int32")
    seg_start = _concat(data.segment_start, new_start, "int64")
    seg_len = _concat(data.segment_length, new_len, "int32")

    def nan_or(old: Any, rows_: int) -> np.ndarray:
        return np.full(rows_, np.nan) if old is None else np.asarray(old[...], np.float64)

    pa = np.asarray([a for _, a, _ in prefs], np.int64)
    pb = np.asarray([b for _, _, b in prefs], np.int64)
    plab = np.asarray([r.label for r, _, _ in prefs], np.float32)
    sseg = np.asarray([s for _, s in safes], np.int64)
    slab = np.asarray([r.safe for r, _ in safes], np.int8).reshape(len(safes), int(data.thresholds.shape[0]))
    out = copy.copy(data)
    out.segment_episode, out.segment_start, out.segment_length = seg_ep, seg_start, seg_len
    out.pref_a = _concat(data.pref_a, pa, "int64")
    out.pref_b = _concat(data.pref_b, pb, "int64")
    out.pref_label = _concat(data.pref_label, plab, "float32")
    out.pref_prob = _concat(data.pref_prob, np.full(len(prefs), np.nan), "float32")
    out.pref_source = np.concatenate([old_pref_src, [source_index[r.source] for r, _, _ in prefs]]).astype(
        np.int16)
    out.pref_time = np.concatenate([nan_or(data.pref_time, P0), [r.time for r, _, _ in prefs]])
    out.pref_confidence = np.concatenate([nan_or(data.pref_confidence, P0),
                                          [r.confidence for r, _, _ in prefs]]).astype(np.float32)
    out.safety_segment = _concat(data.safety_segment, sseg, "int64")
    out.safety_label = np.concatenate([np.asarray(data.safety_label[...], np.int8), slab])
    out.safety_source = np.concatenate([old_saf_src, [source_index[r.source] for r, _ in safes]]).astype(
        np.int16)
    out.safety_time = np.concatenate([nan_or(data.safety_time, M0), [r.time for r, _ in safes]])
    out.safety_confidence = np.concatenate([nan_or(data.safety_confidence, M0),
                                            [r.confidence for r, _ in safes]]).astype(np.float32)
    old_single = _single_column(data)
    out.safety_single = np.concatenate([old_single, [r.single for r, _ in safes]]).astype(bool)
    if data.has_split:  # imported rows are training rows
        old_pref_val, old_saf_val = split_columns(data)
        out.pref_split = np.concatenate([old_pref_val, np.zeros(len(prefs), bool)]).astype(np.int8)
        out.safety_split = np.concatenate([old_saf_val, np.zeros(len(safes), bool)]).astype(np.int8)

    meta = copy.deepcopy(data.metadata) if isinstance(data.metadata, dict) else {}
    if data.oracle is not None:
        out.oracle = _extended_oracle(data.oracle, meta, res.H, new_start, seg_start, pa, pb, sseg)
    meta["label_sources"] = sources
    meta.setdefault("preferences", {})["n"] = int(out.pref_a.shape[0])
    meta.setdefault("safety", {})["n"] = int(out.safety_segment.shape[0])
    meta.setdefault("segments", {})["n"] = int(seg_start.shape[0])
    per_source: dict[str, dict[str, int]] = {}
    for r, *_ in prefs:
        per_source.setdefault(r.source, {"preferences": 0, "safety": 0})["preferences"] += 1
    for r, _ in safes:
        per_source.setdefault(r.source, {"preferences": 0, "safety": 0})["safety"] += 1
    meta.setdefault("imports", []).append({
        **origin, "from_store_id": data.store_id, "preferences": len(prefs), "safety": len(safes),
        "single_judgements": int(sum(r.single for r, _ in safes)), "new_segments": len(res.new),
        "sources": per_source, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "segment_start": "global transition index in segments/start; files give the step within the episode",
    })
    out.metadata = meta
    out.store_id = bump_version(data.store_id)
    requested = (meta.get("preferences", {}).get("n_requested") or P0) + len(prefs)
    o = out.oracle
    out.quality = {**compute_quality(
        pref_a=out.pref_a, pref_b=out.pref_b, pref_label=out.pref_label, safety_label=out.safety_label,
        thresholds=np.asarray(data.thresholds[...]), segment_episode=seg_ep, n_episodes=data.n_episodes,
        n_pairs_requested=requested,
        oracle_pref_label=None if o is None else o.pref_label,
        oracle_safety_label=None if o is None else o.safety_label,
        segment_return=None if o is None else o.segment_return)}
    return out


def _extended_oracle(o: OracleData, meta: dict, H: int, new_start: np.ndarray, seg_start: np.ndarray,
                     pa: np.ndarray, pb: np.ndarray, sseg: np.ndarray) -> OracleData:
    """The oracle group with the imported rows' noise-free labels (computed as ``make`` does)."""
    from feedbackgen.safety import SafetySpec, label_safety
    from feedbackgen.segments import gather_windows

    rewards = np.asarray(o.rewards[...], np.float32)
    costs = np.asarray(o.costs[...], np.float32)
    seg_ret = np.asarray(o.segment_return[...], np.float32)
    seg_cost = np.asarray(o.segment_cost[...], np.float32)
    if new_start.size:
        rw, cw = gather_windows(rewards, new_start, H), gather_windows(costs, new_start, H)
        seg_ret = np.concatenate([seg_ret, rw.sum(axis=1).astype(np.float32)])
        seg_cost = np.concatenate([seg_cost, cw.sum(axis=1).astype(np.float32)])

    def returns(ids: np.ndarray) -> np.ndarray:  # float64 sums, as the teachers compute them
        if ids.size == 0:
            return np.zeros(0)
        return gather_windows(rewards, seg_start[ids], H).sum(axis=1, dtype=np.float64)

    pref_oracle = (0.5 * (1.0 + np.sign(returns(pb) - returns(pa)))).astype(np.float32)
    thresholds = np.asarray(meta.get("safety", {}).get("thresholds", []), np.float64)
    rule = meta.get("safety", {}).get("rule", "scaled")
    t_max = int(meta.get("task", {}).get("max_episode_steps") or H)
    if sseg.size:
        _, saf_oracle = label_safety(gather_windows(costs, seg_start[sseg], H), thresholds,
                                     SafetySpec(rule=rule, noise="none"), max_episode_steps=t_max,
                                     rng=np.random.default_rng(0))
    else:
        saf_oracle = np.zeros((0, thresholds.size), np.int8)
    return OracleData(
        rewards=o.rewards, costs=o.costs, episode_reward=o.episode_reward, episode_cost=o.episode_cost,
        segment_return=seg_ret, segment_cost=seg_cost,
        pref_label=np.concatenate([np.asarray(o.pref_label[...], np.float32), pref_oracle]),
        safety_label=np.concatenate([np.asarray(o.safety_label[...], np.int8), saf_oracle.astype(np.int8)]))


def bump_version(store_id: str) -> str:
    """``ns/name-vN`` -> ``ns/name-vN+1`` (``-v2`` appended to an id without a version).

    Example:
        >>> bump_version("feedbackgen/BallRun-1a2b3c4d-v1")
        'feedbackgen/BallRun-1a2b3c4d-v2'
    """
    m = re.match(r"^(.*)-v(\d+)$", store_id or "")
    if m:
        return f"{m.group(1)}-v{int(m.group(2)) + 1}"
    return f"{store_id or 'feedbackgen/store'}-v2"


def default_out(store: Path, new_id: str) -> Path:
    """``x.zarr`` -> ``x-vN.zarr`` next to it, N the new version (an existing ``-vK`` is replaced)."""
    version = re.search(r"-v(\d+)$", new_id)
    n = version.group(1) if version else "2"
    stem = re.sub(r"-v\d+$", "", store.name.removesuffix(".zip").removesuffix(".zarr"))
    return store.with_name(f"{stem}-v{n}.zarr")


def import_labels(store: str | Path, label_file: str | Path, *, out: str | Path | None = None,
                  in_place: bool = False, overwrite: bool = False) -> ImportResult:
    """Import a label file into a store as a new store version.

    Args:
        store: the store (directory, or a published ``.zip``).
        label_file: CSV, JSON lines, or an annotation journal (see the module docstring).
        out: where the new version goes; default ``<store stem>-vN.zarr`` beside the store.
        in_place: replace ``store`` itself (atomically) instead of writing a new directory.
        overwrite: replace an existing ``out``.

    Raises:
        LabelImportError: problems in the file (all of them, by line number); nothing is written.
        FeedbackgenError: missing store or file, or ``out`` exists without ``overwrite``.
    """
    store, label_file = Path(store), Path(label_file)
    data = open_store(store, lazy=True)
    if in_place and out is not None:
        raise FeedbackgenError("give either --out or --in-place, not both")
    if in_place and store.suffix == ".zip":
        raise FeedbackgenError(f"{store} is a published zip and cannot be changed in place; pass --out")
    target = store if in_place else Path(out) if out is not None else default_out(store, bump_version(
        data.store_id))
    if not in_place and target.resolve() == store.resolve():
        raise FeedbackgenError(f"--out {target} is the input store; pass --in-place to replace it")
    if not in_place and target.exists() and not overwrite:
        raise FeedbackgenError(f"{target} already exists; pass --overwrite to replace it "
                               "or choose another --out")
    thresholds = np.asarray(data.thresholds[...], np.float64)
    rows, problems, notes = read_label_file(label_file, thresholds, store_id=data.store_id)
    digest = sha256_file(label_file)
    new = add_labels(data, rows, problems=problems,
                     origin={"file": label_file.name, "sha256": digest, "rows": len(rows)})
    path = write_store(target, new, overwrite=in_place or overwrite)
    imp = new.metadata["imports"][-1]
    return ImportResult(path=path, store_id=new.store_id, from_store_id=data.store_id,
                        preferences=imp["preferences"], safety=imp["safety"],
                        new_segments=imp["new_segments"], sources=sorted(imp["sources"]), notes=notes)


# ------------------------------------------------------------------------------------------------
# statistics per source


def _kappa(x: np.ndarray, y: np.ndarray) -> float | None:
    """Cohen's kappa (scikit-learn); None when undefined (e.g. both raters constant and equal)."""
    from sklearn.metrics import cohen_kappa_score

    if x.size == 0:
        return None
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        k = float(cohen_kappa_score(x, y))
    return k if math.isfinite(k) else None


def source_statistics(data: FeedbackData) -> dict[str, Any]:
    """Per-source label counts, agreement with the oracle, and agreement between sources.

    Returns:
        ``{"sources": [...], "pairs": [...]}``. Each source: ``id``, ``kind``, ``preferences``,
        ``safety`` (row counts), ``single_judgements``, ``preference_agreement`` (share equal to the
        oracle label, oracle ties excluded) and ``safety_agreement`` (mean over thresholds), None
        without an oracle. Each pair of sources with common items: ``a``, ``b``, ``channel``
        (``preferences``: the same two segments in either order, labels oriented alike;
        ``safety``: the same segment, every threshold), ``n`` (items, or item × threshold cells
        for safety), ``agreement`` (share equal) and ``kappa`` (Cohen's kappa, scikit-learn's
        ``cohen_kappa_score``; None when undefined).
    """
    from feedbackgen.quality import preference_agreement, safety_agreement

    sources = label_sources(data)
    psrc, ssrc = source_columns(data)
    a = np.asarray(data.pref_a[...], np.int64)
    b = np.asarray(data.pref_b[...], np.int64)
    y = np.asarray(data.pref_label[...], np.float64)
    seg = np.asarray(data.safety_segment[...], np.int64)
    lab = np.asarray(data.safety_label[...], np.int64)
    single = _single_column(data)
    o = data.oracle
    opref = None if o is None else np.asarray(o.pref_label[...], np.float64)
    osaf = None if o is None else np.asarray(o.safety_label[...], np.int64)
    out_sources = []
    for i, s in enumerate(sources):
        pm, sm = psrc == i, ssrc == i
        entry: dict[str, Any] = {**s, "preferences": int(pm.sum()), "safety": int(sm.sum()),
                                 "single_judgements": int((single & sm).sum()),
                                 "preference_agreement": None, "safety_agreement": None}
        if opref is not None and osaf is not None:  # both read from the oracle group, if there is one
            entry["preference_agreement"] = preference_agreement(y[pm], opref[pm]) if pm.any() else None
            entry["safety_agreement"] = safety_agreement(lab[sm], osaf[sm])[0] if sm.any() else None
        out_sources.append(entry)
    # orient every pair as (low id, high id): label y' = P(high ≻ low)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    yo = np.where(a <= b, y, 1.0 - y)
    pref_items: list[dict[tuple[int, int], float]] = [{} for _ in sources]
    for k in range(a.size):
        pref_items[psrc[k]].setdefault((int(lo[k]), int(hi[k])), float(yo[k]))
    saf_items: list[dict[int, np.ndarray]] = [{} for _ in sources]
    for k in range(seg.size):
        saf_items[ssrc[k]].setdefault(int(seg[k]), lab[k])
    pairs = []
    for i in range(len(sources)):
        for j in range(i + 1, len(sources)):
            common = sorted(set(pref_items[i]) & set(pref_items[j]))
            if common:
                xi = np.asarray([pref_items[i][c] for c in common])
                xj = np.asarray([pref_items[j][c] for c in common])
                pairs.append({"a": sources[i]["id"], "b": sources[j]["id"], "channel": "preferences",
                              "n": len(common), "agreement": float(np.mean(xi == xj)),
                              "kappa": _kappa((2 * xi).astype(int), (2 * xj).astype(int))})
            common_s = sorted(set(saf_items[i]) & set(saf_items[j]))
            if common_s:
                xi = np.concatenate([saf_items[i][c] for c in common_s])
                xj = np.concatenate([saf_items[j][c] for c in common_s])
                pairs.append({"a": sources[i]["id"], "b": sources[j]["id"], "channel": "safety",
                              "n": int(xi.size), "segments": len(common_s),
                              "agreement": float(np.mean(xi == xj)), "kappa": _kappa(xi, xj)})
    return {"sources": out_sources, "pairs": pairs}
