"""``python -m presa``: the same as the ``presa`` command (needs the CLI's Typer/Rich)."""

from presa_cli.presa_app import main

if __name__ == "__main__":
    main()
