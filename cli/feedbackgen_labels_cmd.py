"""`feedbackgen import-labels` and `feedbackgen annotate`: human labels into a store.

Both write a new store version (``...-vN+1``) atomically; problems in a label file are reported
all at once, by line number, and nothing is written.
"""

from __future__ import annotations

import signal
import webbrowser
from pathlib import Path
from typing import Annotated

import presa_cli.console as term
import typer
from rich.text import Text

from feedbackgen.errors import FeedbackgenError


def _fail(exc: FeedbackgenError | OSError) -> typer.Exit:
    """One red ``error:`` line (plus the per-line details of a label file) and exit code 1."""
    if isinstance(exc, OSError):
        return term.fail(term.os_error_text(exc))
    problems = list(getattr(exc, "problems", []))
    details = problems[:200] + ([f"... and {len(problems) - 200} more"] if len(problems) > 200 else [])
    return term.fail(str(exc), details)


def _print_result(res, verb: str) -> None:
    con = term.out()
    con.print(Text.assemble((f"{verb} ", "green"), f"{res.path}  ", (res.store_id, "bold"),
                            f"  (from {res.from_store_id})"))
    con.print(f"{res.preferences} preference labels, {res.safety} safety labels, {res.new_segments} new "
              f"segments; sources: {', '.join(res.sources) or '–'}")
    for note in res.notes:
        con.print(Text(f"note: {note}", style="yellow"), soft_wrap=True)


def import_labels_command(
    store: Annotated[Path, typer.Argument(help="The store (directory or published .zip).")],
    from_: Annotated[Path, typer.Option(
        "--from", help="CSV or JSON-lines label file (or an annotation journal); columns: kind, source, "
                       "time, confidence, a, b, label (P(b ≻ a)), segment, safe or safe@κ; segments also as "
                       "episode/start/length with start the step within the episode.")],
    out: Annotated[Path | None, typer.Option(
        help="The new store version (default: <store>-vN.zarr beside the store).")] = None,
    in_place: Annotated[bool, typer.Option(
        "--in-place", help="Replace STORE itself (atomically) with the new version.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Add human (or other) labels to a store as a new store version."""
    from feedbackgen.labels import import_labels

    try:
        res = import_labels(store, from_, out=out, in_place=in_place, overwrite=overwrite)
    except (FeedbackgenError, OSError) as exc:
        raise _fail(exc) from None
    _print_result(res, "wrote")


def annotate_command(
    store: Annotated[Path, typer.Argument(help="The store to annotate.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 0,
    host: Annotated[str, typer.Option(
        help="Loopback address to bind (other addresses are refused).")] = "127.0.0.1",
    annotator: Annotated[str | None, typer.Option(help="Your name (else typed into the page).")] = None,
    pairs: Annotated[int, typer.Option(
        help="Pairs to ask each annotator (the store's first teacher pairs).")] = 20,
    journal: Annotated[Path | None, typer.Option(
        help="Answer journal (default <store>.journal.jsonl beside the store).")] = None,
    open_browser: Annotated[bool, typer.Option(
        "--open/--no-open", help="Open the page in a browser.")] = False,
    finish: Annotated[bool, typer.Option(
        "--finish", help="Do not serve: turn the journal into a new store version and exit.")] = False,
    out: Annotated[Path | None, typer.Option(help="With --finish: the new store version.")] = None,
    in_place: Annotated[bool, typer.Option(
        "--in-place", help="With --finish: replace STORE itself.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="With --finish: replace an existing --out.")] = False,
) -> None:
    """Label pairs of segments in a local web page (loopback only); --finish imports the answers."""
    from feedbackgen.annotate import journal_path, make_server

    if finish:
        from feedbackgen.labels import import_labels

        try:
            path = journal if journal is not None else journal_path(store)
            if not path.is_file():
                raise FeedbackgenError(f"no journal at {path}: annotate first (feedbackgen annotate {store}) "
                                       "or pass --journal")
            res = import_labels(store, path, out=out, in_place=in_place, overwrite=overwrite)
        except (FeedbackgenError, OSError) as exc:
            raise _fail(exc) from None
        _print_result(res, "wrote")
        return
    try:
        server = make_server(store, host=host, port=port, annotator=annotator, pairs=pairs, journal=journal)
    except (FeedbackgenError, OSError) as exc:
        raise _fail(exc) from None
    typer.echo(f"annotate: serving {server.url} (answers journaled to {server.annotation.journal.path}); "
               "Ctrl-C stops", err=False)
    typer.echo(f"then: feedbackgen annotate {store} --finish", err=False)
    if open_browser:
        webbrowser.open(server.url)

    def _stop(signum, frame):  # SIGTERM: stop like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    typer.echo("annotate: stopped; every saved answer is in the journal")
