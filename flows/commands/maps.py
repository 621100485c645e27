"""``svcluster ingest``, ``export`` and ``sql``: maps in and out of the lake, and ad-hoc SQL."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import pyarrow as pa
import typer
from rich.cells import cell_len
from rich.table import Column, Table
from rich.text import Text

from svcluster.flows.cli import JsonOption, LakeOption, emit, invocation, json_text, print_table, stderr, stdout, to_jsonable
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.export.step import DEFAULT_NOISE_FORMAT, DEFAULT_TAG_FORMAT, export_map
from svcluster.tasks.ingest.step import ingest_map


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
    noise_tag: Annotated[
        str, typer.Option("--noise-tag", help="Tag template of the places HDBSCAN left in no cluster (cluster -1): {k}, {run}.")
    ] = DEFAULT_NOISE_FORMAT,
    tag_outliers: Annotated[
        bool,
        typer.Option("--tag-outliers", help="Also tag 'outlier' the places far out of their cluster (the cluster_outliers SQL view)."),
    ] = False,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write a map back in its own shape: every location of the input, in order, each with its
    place's cluster tag from RUN."""
    inv = invocation(ctx, lake, json_output)
    if not run and not map_name:
        raise SvclusterError("name a RUN to export, or --map NAME to export a map untagged")
    r = export_map(
        inv.lake, out, map_name=map_name, run=run, tag_format=tag_format, refresh_panos=refresh_panos,
        noise_format=noise_tag, tag_outliers=tag_outliers,
    )
    text = f"wrote {r.locations} locations of {r.map} to {r.out}"
    if refresh_panos:
        text += f"\n{r.refreshed_panos} stale pano ids replaced by their refreshed ids"
    if r.run:
        text += f"\n{r.tagged} tagged by {r.run}"
        if r.not_in_run:
            text += f", {r.not_in_run} not in this run (embedded after it: cluster again to tag them)"
        if r.without_embedding:
            text += f", {r.without_embedding} without an embedding left untagged"
        if tag_outliers:
            text += f"\n{r.outliers} tagged outlier (far out of their cluster: the cluster_outliers view)"
    if r.stale_note:
        text += f"\nnote: {r.stale_note}"
    emit(inv, r, text)


FORMATS = ("table", "plain", "json", "csv")


def sql(
    ctx: typer.Context,
    statement: Annotated[
        Optional[str],
        typer.Argument(
            help="SQL over the lake's views: maps, locations, images, embeddings, cluster_runs, ... "
            "A script of several statements (separated by ;) runs them all, in order, and prints the last one's result."
        ),
    ] = None,
    fmt: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            help="table | plain | json | csv [default: table on a terminal, plain otherwise]. No cell is ever cut: "
            "a table wraps long text and grows wider than the terminal rather than shorten a value; plain is "
            "aligned columns, one row a line; json is strict (NaN and Infinity become null, with a note on stderr).",
        ),
    ] = None,
    catalog: Annotated[
        bool, typer.Option("--catalog", help="Print the SQL that opens this lake in the duckdb CLI (duckdb -init FILE), then exit.")
    ] = False,
    as_of: Annotated[
        Optional[str],
        typer.Option(
            "--as-of",
            metavar="VERSION|TIMESTAMP",
            help="Query the lake as it was: a lake version (svcluster lake history) or an ISO-8601 time (UTC when it has no zone).",
        ),
    ] = None,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run ad-hoc SQL against the lake (DuckDB) and print the result.

    Reads only: a read-only lake answers, and nothing is written to it. A script of several
    statements runs every one, in order, on one connection (tables or variables it creates
    last as long as the command) and prints the result of the last.
    """
    inv = invocation(ctx, lake, json_output)
    if fmt is not None and fmt not in FORMATS:
        raise SvclusterError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if catalog:
        sys.stdout.write(inv.lake.duckdb_catalog_sql())
        return
    example = 'e.g. svcluster sql "SELECT map, count(*) FROM locations GROUP BY map"'
    if statement is None:
        raise SvclusterError(f"give a SQL statement, {example}")
    try:
        result, ran = inv.lake.query_script(statement, as_of=as_of)
    except SvclusterError:
        raise
    except Exception as exc:  # duckdb's own message says what is wrong with the statement
        raise SvclusterError(f"SQL failed: {' '.join(str(exc).split())}") from None
    if not ran:
        raise SvclusterError(f"empty query: the statement holds no SQL (only blanks, comments or semicolons); {example}")
    fmt = "json" if inv.json else fmt or ("table" if stdout.is_terminal else "plain")
    columns = result.column_names if result is not None else []
    rows = list(zip(*(c.to_pylist() for c in result.columns))) if result is not None and columns else []
    if fmt == "json":
        sys.stdout.write(json_text([dict(zip(columns, r)) for r in rows]))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        if columns:
            writer.writerow(columns)
        writer.writerows([[_cell(v) for v in r] for r in rows])
        sys.stdout.write(buf.getvalue())
    else:
        numeric = [_numeric(result.schema.field(i).type) for i in range(len(columns))] if result is not None else []
        if fmt == "plain":
            sys.stdout.write(plain_text(columns, rows, numeric))
            stderr.print(_row_count(len(rows)), highlight=False, markup=False)
        else:
            table = Table(*[Column(c, justify="right" if n else "left") for c, n in zip(columns, numeric)], show_lines=False)
            for r in rows:
                table.add_row(*[Text(_cell(v)) for v in r])
            print_table(table)
            stdout.print(_row_count(len(rows)), highlight=False, markup=False)


def plain_text(columns: list[str], rows: list[tuple], numeric: list[bool]) -> str:
    """Aligned columns, one row a line (line breaks in a cell written as \\n), nothing cut:
    for a pipe, a file or a pager."""
    cells = [[_cell(v).replace("\r", "\\r").replace("\n", "\\n") for v in r] for r in rows]
    if not columns:
        return ""
    widths = [max([cell_len(h), *(cell_len(r[i]) for r in cells)]) for i, h in enumerate(columns)]

    def line(values: list[str]) -> str:
        padded = [
            " " * (w - cell_len(v)) + v if right else v + " " * (w - cell_len(v))
            for v, w, right in zip(values, widths, numeric)
        ]
        return "  ".join(padded).rstrip() + "\n"

    return line(list(columns)) + "".join(line(r) for r in cells)


def _numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)


def _row_count(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


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
