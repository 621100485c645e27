"""``svcluster report`` (the HTML page + PNG of a run) and ``svcluster names`` (cluster names)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svcluster.flows.cli import JsonOption, LakeOption, emit, invocation
from svcluster.flows.commands.progress import RichBar
from svcluster.tasks.cluster.naming import DEFAULT_TOP, name_clusters
from svcluster.tasks.report.page import build_report


def report(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Cluster run: run_id or MAP@vN.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write report.html and cluster_map.png into.")] = Path("report"),
    names: Annotated[bool, typer.Option("--names/--no-names", help="Name unnamed clusters with the model's text tower first.")] = True,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write a self-contained HTML report (map, clusters, look-alikes, run) and a PNG map of RUN."""
    inv = invocation(ctx, lake, json_output)
    progress = RichBar(unit="img") if not inv.json else None
    r = build_report(inv.lake, run, out, progress=progress, name=names)
    text = (
        f"{r.run}: report of {r.locations:,} locations in {r.clusters} non-empty clusters (k={r.k}) written to {r.html} "
        f"({r.html_bytes / 1e6:.1f} MB, {r.thumbnails} thumbnails, {r.lookalikes} look-alike pairs)\n"
        f"map PNG: {r.png}\n{r.names}"
    ) + "".join(f"\n{n}" for n in r.notices)
    emit(inv, r, text)


def names(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Cluster run: run_id or MAP@vN.")],
    top: Annotated[int, typer.Option("--top", min=1, max=10, help="Names kept per cluster.")] = DEFAULT_TOP,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Name RUN's clusters with curated descriptions scored by the model's text tower (stored in the lake)."""
    inv = invocation(ctx, lake, json_output)
    r = name_clusters(inv.lake, run, top=top)
    if r.reason:
        text = f"{r.run}: {r.reason}"
    else:
        lines = [f"{r.run}: names from {r.model}"]
        for cluster, ranked in sorted(r.names.items()):
            lines.append(f"  {cluster}: " + " · ".join(f"{n.name} ({n.score:.3f})" for n in ranked))
        text = "\n".join(lines)
    emit(inv, r, text)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command()(report)
    app.command()(names)
