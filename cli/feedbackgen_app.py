"""The ``feedbackgen`` command: make, inspect, check and release feedback stores.

Every command is thin: parse the options, build one config, make one library call, print a Rich
summary. A :class:`feedbackgen.errors.FeedbackgenError` becomes one red ``error: ...`` line on
stderr and exit code 1 (never a traceback); outputs are written atomically by the library, so a
failed command leaves nothing behind.

Interface that scripts rely on (stable)::

    feedbackgen make --task T [--source FILE] --noise E --seed S --out PATH
    feedbackgen info PATH --json          # JSON with schema_version and quality.{preference,safety}_agreement
    feedbackgen validate PATH             # exit 0 only when the store is sound
    feedbackgen verify PATH               # exit 0 only when recomputation matches exactly
    feedbackgen migrate PATH [--out NEW]  # rewrite an older-schema store in the current one (exit 0 if
                                          # already current)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import presa_cli.console as term
import typer
from presa_cli.feedbackgen_collect_cmd import collect_command
from presa_cli.feedbackgen_labels_cmd import annotate_command, import_labels_command
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from feedbackgen.errors import FeedbackgenError

app = typer.Typer(
    name="feedbackgen",
    help="Turn offline safe-RL trajectories into versioned preference + safety feedback stores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
term.configure_help_width()


@contextmanager
def _progress() -> Iterator[Any]:
    """A Rich progress display (on stderr) and a ``progress(step, done, total)`` callback for it."""
    bar = Progress(TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), console=term.err(), transient=True)
    ids: dict[str, Any] = {}

    def update(step: str, done: int, total: int) -> None:
        if step not in ids:
            ids[step] = bar.add_task(step, total=max(total, 1))
        bar.update(ids[step], completed=done, total=max(total, 1))

    with bar:
        yield update


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


@app.command()
def make(
    task: Annotated[str, typer.Option(help="Task name (see `feedbackgen tasks`).")],
    source: Annotated[Path | None, typer.Option(
        help="DSRL-format HDF5 file; default: the shipped dataset, the DSRL cache, or a download.")] = None,
    noise: Annotated[float, typer.Option(help="Mistake probability ε for both channels.")] = 0.1,
    pref_noise: Annotated[float | None, typer.Option(
        help="Mistake probability of the preference teacher (overrides --noise).")] = None,
    safety_noise: Annotated[float | None, typer.Option(
        help="Noise probability of the safety labels (overrides --noise).")] = None,
    teacher: Annotated[str, typer.Option(
        help="Teacher: oracle, bt:beta=B, myopic:gamma=G, skip:margin=M, equal:margin=M, mistake:eps=E, "
             "joined by '+'.")] = "oracle",
    safety_rule: Annotated[str, typer.Option(help="Safety rule: scaled, episode or zero.")] = "scaled",
    safety_noise_model: Annotated[str, typer.Option(
        help="Safety noise: flip, none, asymmetric[:false_safe=A,false_unsafe=B], "
             "logistic[:tau=T].")] = "flip",
    segment_length: Annotated[int | None, typer.Option(help="Segment length H in steps.")] = 20,
    segment_fraction: Annotated[float | None, typer.Option(
        help="Segment length as a fraction of the task's max episode length (instead of H).")] = None,
    n_pairs: Annotated[int, typer.Option(help="Preference pairs to label.")] = 10_000,
    n_safety: Annotated[int, typer.Option(help="Segments to label for safety.")] = 10_000,
    safety_from_pairs: Annotated[bool, typer.Option(
        "--safety-from-pairs/--separate-safety",
        help="Label safety on the pair segments, or on separately drawn segments.")] = True,
    val_fraction: Annotated[float, typer.Option(
        help="Share of the episodes held out as a validation split, in [0, 1); their pairs and safety "
             "segments are validation rows (0: no split).")] = 0.1,
    seed: Annotated[int, typer.Option(help="The one seed of the run.")] = 0,
    out: Annotated[Path | None, typer.Option(
        help="Store directory (default datasets/stores/<task>-noise<E>-seed<S>.zarr).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store.")] = False,
    no_download: Annotated[bool, typer.Option("--no-download", help="Never download the source.")] = False,
) -> None:
    """Make a feedback store: sample segments, label preferences and safety, write it atomically."""
    from feedbackgen.make import MakeConfig, make_store
    from feedbackgen.store import open_store

    with term.user_errors():
        cfg = MakeConfig(task=task, source=source, out=out, noise=noise, pref_noise=pref_noise,
                         safety_noise=safety_noise, teacher=teacher, safety_rule=safety_rule,
                         safety_noise_model=safety_noise_model, segment_length=segment_length,
                         segment_fraction=segment_fraction, n_pairs=n_pairs, n_safety=n_safety,
                         safety_from_pairs=safety_from_pairs, val_fraction=val_fraction, seed=seed,
                         overwrite=overwrite,
                         download=not no_download)
        with _progress() as progress:
            path = make_store(cfg, progress=progress)
        data = open_store(path, lazy=True)
    con = term.out()
    con.print(Text.assemble(("wrote ", "green"), f"{path}  ", (data.store_id, "bold")))
    q = data.quality
    con.print(f"{data.n_transitions} transitions, {data.n_episodes} episodes, {data.n_segments} segments; "
              f"{q['n_pairs']} pairs (skipped {q['n_pairs_requested'] - q['n_pairs']}), "
              f"{q['n_safety']} safety segments × {len(q['thresholds'])} thresholds")
    split = _split_counts(data)
    if split is not None:
        con.print(f"validation split: {split['val_episodes']} of {data.n_episodes} episodes; "
                  f"{split['val_pairs']} pairs, {split['val_safety']} safety segments held out")
    con.print(f"agreement with oracle: preferences {_fmt(q['preference_agreement'])}, "
              f"safety {_fmt(q['safety_agreement'])}")
    for kappa, frac in zip(q["thresholds"], q.get("safe_fraction") or [], strict=False):
        if q["n_safety"] and frac in (0.0, 1.0):
            kind = "safe" if frac == 1.0 else "unsafe"
            term.err().print(Text(f"warning: at threshold {kappa:g} every safety label is {kind}; algorithms "
                              "that need both kinds (presa, safety_only, two_stage) cannot train on it",
                              style="yellow"), soft_wrap=True)


def _split_counts(data: Any) -> dict[str, Any] | None:
    """Train/validation row counts of a store with a validation split, else None."""
    from feedbackgen.store import split_columns

    if not data.has_split:
        return None
    pv, sv = split_columns(data)
    meta = data.metadata.get("split") if isinstance(data.metadata, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    return {"val_fraction": meta.get("val_fraction"), "val_episodes": len(meta.get("val_episodes") or []),
            "train_pairs": int((~pv).sum()), "val_pairs": int(pv.sum()),
            "train_safety": int((~sv).sum()), "val_safety": int(sv.sum())}


def _info_record(path: Path) -> dict[str, Any]:
    from feedbackgen.labels import source_statistics
    from feedbackgen.store import open_store

    data = open_store(path, lazy=True)
    return {
        "path": str(path), "store_id": data.store_id, "schema_version": data.schema_version,
        "next_observations": data.next_observations_form, "has_oracle": data.oracle is not None,
        "counts": {"transitions": data.n_transitions, "episodes": data.n_episodes,
                   "segments": data.n_segments, "pairs": int(data.pref_a.shape[0]),
                   "safety_segments": int(data.safety_segment.shape[0]), "obs_dim": data.obs_dim,
                   "act_dim": data.act_dim},
        "split": _split_counts(data),
        "thresholds": [float(t) for t in data.thresholds[...]],
        "quality": data.quality,
        "label_sources": source_statistics(data),
        "metadata": data.metadata,
    }


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="Store directory or published .zip.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
) -> None:
    """Summarise a store: counts, parameters, label balance and agreement with the oracle."""
    with term.user_errors():
        rec = _info_record(path)
    if as_json:
        typer.echo(json.dumps(rec, indent=2))
        return
    meta, q, c = rec["metadata"], rec["quality"], rec["counts"]
    task = meta.get("task", {})
    seg, pref, saf = meta.get("segments", {}), meta.get("preferences", {}), meta.get("safety", {})
    con = term.out()
    con.print(Text.assemble((rec["store_id"], "bold"), f"  (schema v{rec['schema_version']}, "
                            f"{'with oracle' if rec['has_oracle'] else 'stripped'})  {path}"))
    t = Table(title="store", show_header=False, box=None, pad_edge=False)
    t.add_column(style="cyan")
    t.add_column()
    teacher = ", ".join(f"{k}={v}" for k, v in pref.get("teacher", {}).items() if v is not None)
    src = meta.get("source", {})
    h = seg.get("resolved_length", seg.get("length"))
    shared = "pair segments" if saf.get("shared_with_pairs") else "separate"
    for k, v in (
        ("task", f"{task.get('name')} ({task.get('suite')}, T_max {task.get('max_episode_steps')})"),
        ("source", f"{src.get('file_name', src.get('path'))}  sha256 {str(src.get('sha256'))[:12]}…"),
        ("transitions / episodes",
         f"{c['transitions']} / {c['episodes']}  (obs {c['obs_dim']}, act {c['act_dim']})"),
        ("segments", f"{c['segments']}  (H = {h}, {seg.get('method')})"),
        ("preference pairs", f"{c['pairs']} of {q.get('n_pairs_requested')} asked  (teacher {teacher})"),
        ("safety segments", f"{c['safety_segments']}  (rule {saf.get('rule')}, noise "
                            f"{saf.get('noise_model')} ε={saf.get('noise')}, {shared})"),
        ("train / validation", _split_text(rec["split"])),
        ("seed / created", f"{meta.get('seed')} / {meta.get('created')}"),
        ("toolkit", f"{meta.get('toolkit_version')} ({str(meta.get('git_commit'))[:10]})"),
    ):
        t.add_row(k, Text(v))
    con.print(t)
    qt = Table(title="label quality", show_header=False, box=None, pad_edge=False)
    qt.add_column(style="cyan")
    qt.add_column()
    spe = q.get("segments_per_episode", {})
    gap = q.get("return_gap") or {}
    for k, v in (
        ("preference agreement", _fmt(q.get("preference_agreement"))),
        ("safety agreement (mean)", _fmt(q.get("safety_agreement"))),
        ("oracle tie rate / label ties", f"{_fmt(q.get('tie_rate'))} / {_fmt(q.get('label_tie_rate'))}"),
        ("skip rate", _fmt(q.get("skip_rate"))),
        ("segments per episode", f"mean {_fmt(spe.get('mean'), 2)}, min {spe.get('min')}, "
                                 f"max {spe.get('max')}, episodes used {_fmt(spe.get('episodes_used'), 2)}"),
        ("|R(a) − R(b)|", f"mean {_fmt(gap.get('mean'), 2)}, median "
                          f"{_fmt((gap.get('quantiles') or {}).get('q50'), 2)}" if gap else "–"),
    ):
        qt.add_row(k, Text(v))
    con.print(qt)
    th = Table(title="per threshold")
    for col in ("κ", "safe (labels)", "safe (oracle)", "agreement"):
        th.add_column(col, justify="right")
    n = len(rec["thresholds"])
    for i, kappa in enumerate(rec["thresholds"]):
        def at(key: str, i: int = i) -> Any:
            vals = q.get(key) or [None] * n
            return vals[i] if i < len(vals) else None
        th.add_row(f"{kappa:g}", _fmt(at("safe_fraction")), _fmt(at("oracle_safe_fraction")),
                   _fmt(at("safety_agreement_per_threshold")))
    con.print(th)
    _print_sources(con, rec["label_sources"])


def _split_text(split: dict[str, Any] | None) -> str:
    if split is None:
        return "no validation split (every row is a training row)"
    return (f"pairs {split['train_pairs']} / {split['val_pairs']}, safety segments {split['train_safety']} / "
            f"{split['val_safety']}  ({split['val_episodes']} episodes held out, "
            f"val_fraction {_fmt(split['val_fraction'], 2)})")


def _print_sources(con: Console, stats: dict[str, Any]) -> None:
    """Per-source counts and agreement with the oracle; agreement between sources that overlap."""
    st = Table(title="label sources (agreement with the oracle)")
    for col in ("source", "kind", "pairs", "safety rows", "pref. agreement", "safety agreement"):
        st.add_column(col, justify="left" if col in ("source", "kind") else "right", overflow="fold")
    for s in stats["sources"]:
        st.add_row(Text(s["id"]), s["kind"], str(s["preferences"]), str(s["safety"]),
                   _fmt(s["preference_agreement"]), _fmt(s["safety_agreement"]))
    con.print(st)
    if stats["pairs"]:
        pt = Table(title="agreement between sources where they overlap (Cohen's kappa, scikit-learn)")
        for col in ("source", "source", "channel", "n", "agreement", "kappa"):
            pt.add_column(col, justify="left" if col in ("source", "channel") else "right", overflow="fold")
        for p in stats["pairs"]:
            pt.add_row(Text(p["a"]), Text(p["b"]), p["channel"], str(p["n"]), _fmt(p["agreement"]),
                       _fmt(p["kappa"]))
        con.print(pt)


@app.command()
def validate(path: Annotated[Path, typer.Argument(help="Store directory or published .zip.")]) -> None:
    """Check a store's structure: shapes, dtypes, index ranges, labels, metadata (exit 0 iff sound)."""
    from feedbackgen.verify import validate_store

    with term.user_errors():
        rep = validate_store(path)
    if not rep.ok:
        econ = term.err()
        for p in rep.problems:
            econ.print(Text(f"  - {p}", style="red"), soft_wrap=True)
        raise term.fail(f"{path} failed {len(rep.problems)} of {rep.checks} checks; "
                    "remake it with `feedbackgen make`")
    term.out().print(f"[green]ok[/green] {path}: {rep.checks} structural checks passed")


@app.command()
def verify(
    path: Annotated[Path, typer.Argument(help="Store directory or published .zip.")],
    source: Annotated[Path | None, typer.Option(
        help="The source file (default: the recorded path, else the task's usual place).")] = None,
) -> None:
    """Recompute a store from its source and recorded parameters and compare exactly (exit 0 iff equal)."""
    from feedbackgen.verify import verify_store

    with term.user_errors(), _progress() as progress:
        rep = verify_store(path, source=source, progress=progress)
    if not rep.ok:
        econ = term.err()
        for m in rep.mismatches:
            econ.print(Text(f"  - {m}", style="red"), soft_wrap=True)
        raise term.fail(f"{path} does not match its recomputation from {rep.source} "
                    f"({len(rep.mismatches)} differences); the store was modified or made differently")
    term.out().print(f"[green]verified[/green] {path}: {len(rep.compared)} arrays and records identical "
                 f"to a recomputation from {rep.source}")


@app.command()
def strip(
    path: Annotated[Path, typer.Argument(help="Store directory or .zip.")],
    out: Annotated[Path, typer.Option(help="The stripped store (a new directory).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Copy a store without its oracle group (ground truth) for a blind release."""
    from feedbackgen.publish import strip_store
    from feedbackgen.store import open_store

    with term.user_errors():
        result = strip_store(path, out, overwrite=overwrite)
        sid = open_store(result, lazy=True).store_id
    term.out().print(f"[green]wrote[/green] {result}  [bold]{sid}[/bold] (no oracle group)")


_MIGRATE_HELP = (
    "Rewrite a store of an older schema version in the current one, content unchanged.\n\n"
    "Arrays (bit for bit), attributes, label sources, the oracle group and the store id stay as they are; "
    "only the layout and the version fields change, and metadata.migrations records the migration "
    "(versions, toolkit version, commit, time). Without --out the store is replaced atomically (built "
    "beside it, then swapped in). A store already at the current version is left as it is (exit 0)."
)


@app.command(help=_MIGRATE_HELP)
def migrate(
    path: Annotated[Path, typer.Argument(help="Store directory (or a published .zip, with --out).")],
    out: Annotated[Path | None, typer.Option(
        help="Write the migrated store here, PATH untouched (default: replace PATH in place).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Rewrite a store of an older schema version in the current one (help: ``_MIGRATE_HELP``)."""
    from feedbackgen.store import migrate_store

    with term.user_errors():
        res = migrate_store(path, out, overwrite=overwrite)
    if not res.changed:
        term.out().print(Text(f"{path} is already at schema version {res.to_version}; nothing to do"
                          + (f" ({out} not written)" if out is not None else "")), soft_wrap=True)
        return
    where = "in place" if out is None else f"from {path}"
    term.out().print(Text.assemble(("migrated ", "green"),
                                   f"{res.path} {where}: schema v{res.from_version} -> v{res.to_version} "
                                   f"(next observations {res.next_observations}), ",
                                   (res.store_id, "bold"), " (id unchanged)"), soft_wrap=True)


@app.command()
def publish(
    path: Annotated[Path, typer.Argument(help="Store directory.")],
    out: Annotated[Path, typer.Option(help="Folder to create with the zip, SHA256SUMS and README.md.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Zip a store (stored, readable in place), write a SHA-256 manifest and a dataset card."""
    from feedbackgen.publish import publish_store

    with term.user_errors():
        pub = publish_store(path, out, overwrite=overwrite)
    con = term.out()
    con.print(f"[green]published[/green] {pub.folder}")
    con.print(f"  {pub.archive.name}  sha256 {pub.sha256}")
    con.print(f"  {pub.card.name} (dataset card), {pub.manifest.name}")


@app.command()
def tasks(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the known tasks with their suite, thresholds and where their data is."""
    from feedbackgen.sources import source_status
    from feedbackgen.tasks import all_tasks

    with term.user_errors():
        known = all_tasks()
        rows = [(t, *source_status(t)) for t in known.values()]
    if as_json:
        typer.echo(json.dumps([{**t.to_dict(), "data": kind, "data_path": str(p) if p else None}
                               for t, kind, p in rows], indent=2))
        return
    from feedbackgen.sources import dsrl_cache_dir

    table = Table(title=f"{len(rows)} tasks", caption=f"DSRL cache: {dsrl_cache_dir()}; a task whose data is "
                  "not present is downloaded there by `feedbackgen make` (or pass --source)")
    for col in ("task", "suite", "T_max", "thresholds", "data"):
        table.add_column(col)
    labels = {"shipped": "[green]shipped[/green]", "cache": "[green]cache[/green]",
              "missing": "[yellow]not present[/yellow]"}
    for t, kind, p in rows:
        where = labels[kind] + (f" {p}" if kind != "missing" else "")
        if kind == "missing" and t.origin == "shipped":
            where = f"[red]missing[/red] {p}"
        thresholds = ", ".join(f"{x:g}" for x in t.thresholds)
        table.add_row(t.name, t.suite, str(t.max_episode_steps), thresholds, where)
    term.out().print(table)


@app.command()
def plot(
    out: Annotated[Path, typer.Option(help="PNG file to write.")],
    path: Annotated[Path | None, typer.Argument(help="A store (uses its oracle group).")] = None,
    task: Annotated[str | None, typer.Option(help="Plot a task's source instead of a store.")] = None,
    source: Annotated[Path | None, typer.Option(help="With --task: the source file.")] = None,
    no_download: Annotated[bool, typer.Option("--no-download", help="Never download the source.")] = False,
) -> None:
    """Plot episode reward against episode cost, with the task's cost thresholds drawn."""
    from feedbackgen.plots import plot_source, plot_store

    with term.user_errors():
        if path is not None and task is None:
            result = plot_store(path, out)
        elif task is not None and path is None:
            result = plot_source(task, out, source=source, download=not no_download)
        else:
            raise FeedbackgenError("give either a store PATH or --task (with optional --source), not both "
                                   "or neither")
    term.out().print(f"[green]wrote[/green] {result}")


# `feedbackgen collect` lives in its own module (it imports simulators lazily).
app.command("collect")(collect_command)
# human labels: import a label file, annotate in a local web page
app.command("import-labels")(import_labels_command)
app.command("annotate")(annotate_command)


def main() -> None:
    """Console-script entry point (``feedbackgen``)."""
    app()


if __name__ == "__main__":
    main()
