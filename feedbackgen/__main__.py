"""``python -m feedbackgen``: the same as the ``feedbackgen`` command (needs the CLI's Typer/Rich)."""

from presa_cli.feedbackgen_app import main

if __name__ == "__main__":
    main()
