"""``svcluster assign RUN``: places added to RUN's map since get RUN's nearest centroid, as a new run."""

from __future__ import annotations

from typing import Annotated

import typer

from svcluster.flows.cli import JsonOption, LakeOption, emit, invocation
from svcluster.tasks.cluster.assign import AssignResult, assign_run


def assign(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="The run to extend: run_id or MAP@vN.")],
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """New places of RUN's map -> RUN's nearest centroids, written as a new run (same numbers)."""
    inv = invocation(ctx, lake, json_output)
    result = assign_run(inv.lake, run)
    emit(inv, result, summary(result))


def summary(r: AssignResult) -> str:
    if r.run_id is None:
        return r.note or "nothing to assign"
    sizes = "  ".join(f"{c}:{n}" for c, n in sorted(r.sizes.items()))
    text = f"{r.map}: run {r.run_id} (method assign, parent {r.parent}): {r.kept} assignments kept, {r.assigned} new places assigned\nnew per cluster: {sizes}"
    return text + (f"\n{r.note}" if r.note else "")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command()(assign)
