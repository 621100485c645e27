"""``svcluster lake history | optimize | vacuum | migrate``: the lake's versions and upkeep."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Optional

import typer
from rich.table import Column, Table

from svcluster.flows.cli import JsonOption, LakeOption, emit, invocation, print_table
from svcluster.tasks.cluster.vectors import prune_vector_cache
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.fetch.step import gc_blobs
from svcluster.tasks.lake.maintenance import DEFAULT_RETAIN_HOURS, migrate_lake, optimize_lake, vacuum_tables
from svcluster.tasks.lake.schemas import TABLES
from svcluster.tasks.lake.store import Lake

app = typer.Typer(
    name="lake",
    help="The lake's versions and upkeep: history, optimize, vacuum, migrate.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@app.command()
def history(
    ctx: typer.Context,
    table: Annotated[Optional[str], typer.Argument(help=f"Only this table's commits ({', '.join(TABLES)}).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Show the latest N commits (0: all).")] = 50,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the lake's versions: every commit, what step wrote it, when, and the rows it added.
    A version number is what `svcluster sql --as-of VERSION` takes."""
    inv = invocation(ctx, lake, json_output)
    if table is not None and table not in TABLES:
        raise SvclusterError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    commits = inv.lake.history(table)
    shown = commits[-limit:] if limit > 0 else commits
    rows = [{**asdict(c), "timestamp": c.timestamp.isoformat(timespec="milliseconds")} for c in shown]

    def printer() -> None:
        t = Table(Column("version", justify="right"), "time (UTC)", "table", Column("table version", justify="right"),
                  "step", "operation", Column("rows added", justify="right"), Column("replaced", justify="right"),
                  Column("removed", justify="right"))
        for r in rows:
            t.add_row(str(r["lake_version"]), r["timestamp"].replace("+00:00", ""), r["table"], str(r["version"]),
                      r["step"] or "", r["operation"], _n(r["rows_added"]), _n(r["rows_updated"]), _n(r["rows_removed"]))
        print_table(t)
        more = f" (latest {len(shown)} of {len(commits)}; --limit 0 shows all)" if len(shown) < len(commits) else ""
        print(f"{len(commits)} commits{more}; the lake is at version {len(inv.lake.history())}")

    emit(inv, rows, printer)


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


@app.command()
def optimize(
    ctx: typer.Context,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Compact every table's small files into larger ones (one commit per table; readers and
    time travel are unaffected; `lake vacuum` then deletes the replaced files)."""
    inv = invocation(ctx, lake, json_output)
    result = optimize_lake(inv.lake)
    lines = [f"{c.table}: {c.files_before} -> {c.files_after} files" for c in result if c.files_before != c.files_after]
    emit(inv, [asdict(c) for c in result], "\n".join(lines) or "every table is compact already")


@app.command()
def vacuum(
    ctx: typer.Context,
    retain: Annotated[
        float, typer.Option("--retain", metavar="HOURS", help="Keep the files of versions this recent (0: only the current ones).")
    ] = DEFAULT_RETAIN_HOURS,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete what nothing refers to: table files of versions older than --retain hours, image
    blobs no images row names (older than --retain), and vector caches of embeddings since replaced."""
    inv = invocation(ctx, lake, json_output)
    if retain < 0:
        raise SvclusterError(f"--retain must be 0 or more hours, not {retain:g}")
    tables = vacuum_tables(inv.lake, retain)
    blobs = gc_blobs(inv.lake, min_age_seconds=retain * 3600)
    caches = prune_vector_cache(inv.lake)
    result = {"retain_hours": retain, "table_files_removed": tables.files_removed,
              "orphan_blobs_removed": blobs.removed, "caches_removed": caches}
    text = (f"removed {tables.total} unreferenced table files, {blobs.removed} orphan blobs and {caches} stale vector caches"
            f" (kept what the last {retain:g} hours of versions use)")
    emit(inv, result, text)


@app.command()
def migrate(
    ctx: typer.Context,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Convert a lake of the previous format (folders of Parquet parts) to Delta tables, in place:
    every table's rows, the blobs where they are; the old folders are kept under legacy/. A lake
    of the first Delta layout has its runs' assignments folded into their rows."""
    inv = invocation(ctx, lake, json_output)
    target = Lake(inv.settings.lake).require()
    r = migrate_lake(target)
    if r.already:
        emit(inv, {"migrated": False}, f"the lake at {target.uri} is in the current format already: nothing to convert")
        return
    lines = [f"{name}: {'converted before' if n < 0 else f'{n:,} rows'}" for name, n in r.converted.items()]
    what = ("folded the separate run tables into their runs' rows (cluster_runs)" if r.folded
            else "converted the lake to Delta tables")
    text = (f"{what} at {target.uri}:\n  " + "\n  ".join(lines) +
            "\nblobs and caches are kept where they are; nothing needs recomputing"
            f"\nthe previous files are kept under {r.kept_at}/ (delete it once satisfied)")
    emit(inv, {"migrated": True, "folded": r.folded, "converted": r.converted, "kept_at": r.kept_at}, text)


def register(root: typer.Typer) -> None:
    """Add the ``lake`` command group to the CLI."""
    root.add_typer(app, name="lake")
