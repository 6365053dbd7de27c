"""The one place the command-line apps get their consoles and report user errors.

Rich wraps and crops at the terminal width, and when stdout is not a terminal (a pipe, a log file,
a test runner) it assumes 80 columns (or ``$COLUMNS``): a store path or a SHA-256 printed into a
log would be split mid-word and table cells cut with "…". So when a stream is not a terminal its
console is made wide enough that nothing is wrapped or cut; on a terminal the terminal's width
holds (tables fold their text columns to fit).

Errors the user can fix are one red ``error: ...`` line on stderr and exit code 1, never a
traceback: :func:`fail` prints it, :func:`user_errors` turns library errors into it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.text import Text

from feedbackgen.errors import FeedbackgenError

#: width of a console whose stream is not a terminal: no real line is this long.
PIPE_WIDTH = 100_000
#: width of Typer's help and usage-error panels when stdout is not a terminal (the panels are
#: drawn boxes as wide as the console, so they get a readable width instead of PIPE_WIDTH).
HELP_PIPE_WIDTH = 120


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def configure_help_width() -> None:
    """Give Typer's help a fixed readable width when stdout is not a terminal.

    Typer sizes its help panels from ``$TERMINAL_WIDTH`` or the terminal; in a pipe it falls back
    to 80 columns or ``$COLUMNS``, where option names are cut (``--safety-noise-mod…``). An
    explicit ``$TERMINAL_WIDTH`` still wins.
    """
    import os

    import typer.rich_utils

    if not os.environ.get("TERMINAL_WIDTH") and not Console().is_terminal:
        typer.rich_utils.MAX_WIDTH = HELP_PIPE_WIDTH


def out() -> Console:
    """The console for a command's results (stdout)."""
    return _console(stderr=False)


def err() -> Console:
    """The console for errors, warnings and progress bars (stderr)."""
    return _console(stderr=True)


def os_error_text(exc: OSError) -> str:
    """An OSError (disk full, permission denied, missing folder, ...) as a message that says what to do."""
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return f"{exc.strerror or exc}{where}; check the path and free space, then retry"


def fail(message: str, details: Iterable[str] = ()) -> typer.Exit:
    """Print ``error: message`` in red on stderr (then each detail line indented) and return the
    ``typer.Exit(1)`` to raise."""
    console = err()
    console.print(Text(f"error: {message}", style="red"), soft_wrap=True)
    for line in details:
        console.print(Text(f"  {line}", style="red"), soft_wrap=True)
    return typer.Exit(1)


def warn(message: str) -> None:
    """A yellow line on stderr (e.g. how to continue after an interruption)."""
    err().print(Text(message, style="yellow"), soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn ``FeedbackgenError`` and ``OSError`` into one red line and exit code 1."""
    try:
        yield
    except FeedbackgenError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(os_error_text(exc)) from None
