"""svcluster sub-commands for the clusters step (filled in by that step's work)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
