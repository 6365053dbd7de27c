"""The ``presa`` command: train, evaluate and report on policies learnt from feedback stores.

The app is assembled from one module per command: each ``cli/presa_<name>_cmd.py`` defines a plain
function with ``Annotated`` Typer parameters, and this module registers it with
``app.command("<name>")(function)``. To add a command, write its module and add one import and one
registration line below. Commands turn ``FeedbackgenError`` into one red ``error: ...`` line on
stderr and exit code 1.

Interface that scripts rely on (stable)::

    presa train --data STORE --threshold K --seed S --out RUN_DIR [--preset quick|full]
                [--algo NAME] [--config file.yaml] [--set key=value ...]
    presa train --resume RUN_DIR
"""

from __future__ import annotations

import presa_cli.console as term
import typer
from presa_cli.presa_eval_cmd import eval_command
from presa_cli.presa_report_cmd import report_command
from presa_cli.presa_sweep_cmd import sweep_command
from presa_cli.presa_train_cmd import train_command

app = typer.Typer(
    name="presa",
    help="Train safe policies from preference and safety feedback (PreSa and baselines), evaluate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
term.configure_help_width()

app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("report")(report_command)
app.command("sweep")(sweep_command)


def main() -> None:
    """Console-script entry point (``presa``)."""
    app()


if __name__ == "__main__":
    main()
