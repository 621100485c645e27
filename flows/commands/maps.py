"""``svcluster ingest``, ``export`` and ``sql``: maps in and out of the lake, and ad-hoc SQL."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from flows.cli import JsonOption, LakeOption, emit, invocation, stdout, to_jsonable
from tasks.errors import SvclusterError
from tasks.export import DEFAULT_TAG_FORMAT, export_map
from tasks.ingest import ingest_map


def ingest(
    ctx: typer.Context,
    map_file: Annotated[Path, typer.Argument(help="Map JSON: a bare array (GeoGuessr, Vali) or {name, customCoordinates}.")],
    map_name: Annotated[Optional[str], typer.Option("--map", help="Map name in the lake [default: the file's stem].")] = None,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Validate a map file and load its locations into the lake (replacing that map's)."""
    inv = invocation(ctx, lake, json_output)
    r = ingest_map(inv.lake, map_file, map_name)
    places = "" if r.places == r.locations else f" on {r.places} places"
    if r.unchanged:
        text = f"{r.map}: {r.locations} locations{places}, unchanged since the last ingest"
    else:
        text = f"{r.map}: {r.locations} locations{places} ingested ({r.format}, {r.dialect}) into {inv.lake.uri}"
    if r.duplicates:
        text += f"\n{r.duplicates} exact duplicate locations, all kept ({_pairs(r.duplicate_examples, r.duplicates)})"
    if r.shared_place:
        text += (
            f"\n{r.shared_place} locations share a panorama or coordinates with an earlier one, all kept; "
            f"each place is fetched and embedded once ({_pairs(r.shared_place_examples, r.shared_place, 'shares with')})"
        )
    emit(inv, r, text)


def _pairs(examples: list[tuple[int, int]], total: int, joint: str = "=") -> str:
    """``item 3 = item 0, item 4 = item 2, ...``: the first pairs of a duplicate report."""
    shown = ", ".join(f"item {i} {joint} item {j}" for i, j in examples)
    return shown + (", ..." if total > len(examples) else "")


def export(
    ctx: typer.Context,
    run: Annotated[Optional[str], typer.Argument(help="Cluster run (run_id or MAP@vN) whose tags to add.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output JSON file.")] = Path("export.json"),
    map_name: Annotated[Optional[str], typer.Option("--map", help="Export a map without a run (no new tags).")] = None,
    tag_format: Annotated[
        str, typer.Option("--tag-format", help="Tag template: {k}, {cluster}, {run}, {name} (the cluster's best name; needs `svcluster names RUN`).")
    ] = DEFAULT_TAG_FORMAT,
    refresh_panos: Annotated[
        bool,
        typer.Option(
            "--refresh-panos",
            help="Write the pano ids the fetch refreshed (old ids Google deleted) into panoId / extra.panoId; by default the file's own ids are kept.",
        ),
    ] = False,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write a map back in its own shape: every location of the input, in order, each with its
    place's cluster tag from RUN."""
    inv = invocation(ctx, lake, json_output)
    if not run and not map_name:
        raise SvclusterError("name a RUN to export, or --map NAME to export a map untagged")
    r = export_map(inv.lake, out, map_name=map_name, run=run, tag_format=tag_format, refresh_panos=refresh_panos)
    text = f"wrote {r.locations} locations of {r.map} to {r.out}"
    if refresh_panos:
        text += f"\n{r.refreshed_panos} stale pano ids replaced by their refreshed ids"
    if r.run:
        text += f"\n{r.tagged} tagged by {r.run}"
        if r.not_in_run:
            text += f", {r.not_in_run} not in this run (embedded after it: cluster again to tag them)"
        if r.without_embedding:
            text += f", {r.without_embedding} without an embedding left untagged"
    if r.stale_note:
        text += f"\nnote: {r.stale_note}"
    emit(inv, r, text)


def sql(
    ctx: typer.Context,
    statement: Annotated[
        Optional[str], typer.Argument(help="SQL over the lake's views: maps, locations, images, embeddings, cluster_runs, ...")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | json | csv")] = "table",
    catalog: Annotated[
        bool, typer.Option("--catalog", help="Print the SQL that opens this lake in the duckdb CLI (duckdb -init FILE), then exit.")
    ] = False,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run ad-hoc SQL against the lake (DuckDB) and print the result."""
    inv = invocation(ctx, lake, json_output)
    if fmt not in ("table", "json", "csv"):
        raise SvclusterError(f"--format must be table, json or csv, not {fmt!r}")
    if catalog:
        sys.stdout.write(inv.lake.duckdb_catalog_sql())
        return
    if not statement:
        raise SvclusterError("give a SQL statement, e.g. svcluster sql \"SELECT map, count(*) FROM locations GROUP BY map\"")
    try:
        result = inv.lake.query(statement)
    except Exception as exc:  # duckdb's own message says what is wrong with the statement
        raise SvclusterError(f"SQL failed: {' '.join(str(exc).split())}") from None
    rows = result.to_pylist()
    if inv.json or fmt == "json":
        sys.stdout.write(json.dumps(to_jsonable(rows), ensure_ascii=False, indent=2) + "\n")
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(result.column_names)
        writer.writerows([[_cell(v) for v in r.values()] for r in rows])
        sys.stdout.write(buf.getvalue())
    else:
        table = Table(*result.column_names, show_lines=False)
        for r in rows:
            table.add_row(*[_cell(v) for v in r.values()])
        stdout.print(table)
        stdout.print(f"{len(rows)} rows", highlight=False)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(to_jsonable(value), ensure_ascii=False)
    return str(value)


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(export)
    app.command()(sql)
