"""Typer apps for the `feedbackgen` and `presa` commands (import name: presa_cli)."""
