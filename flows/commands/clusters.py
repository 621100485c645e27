"""``svcluster cluster``, ``runs`` and ``compare``: versioned clusterings and how they differ."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Optional

import typer
from rich.table import Table

from svcluster.flows.cli import JsonOption, LakeOption, emit, invocation, print_table, stdout
from svcluster.flows.commands.progress import RichBar
from svcluster.flows.options import with_options
from svcluster.tasks.cluster.step import ClusterOptions, ClusterResult, RunInfo, RunSummary, cluster_map, runs as list_runs
from svcluster.tasks.cluster.duplicates import DUPLICATE_COSINE
from svcluster.tasks.cluster.compare import Comparison, compare_runs, compare_with_tags
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.cluster.naming import best_names

MAX_CONTINGENCY_COLUMNS = 30
MOVERS_PRINTED = 10


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@with_options(options=ClusterOptions)
def cluster(
    ctx: typer.Context,
    map_name: Annotated[str, typer.Option("--map", help="Map to cluster (its embeddings must exist).")],
    lake: LakeOption = None,
    json_output: JsonOption = False,
    *,
    options: ClusterOptions,
) -> None:
    """Cluster a map's embeddings into a new run (or reuse the identical run already there)."""
    inv = invocation(ctx, lake, json_output)
    result = cluster_map(inv.lake, map_name, options, RichBar(unit="run", enabled=not inv.json))
    emit(inv, result, lambda: print_cluster(result))


def print_cluster(r: ClusterResult) -> None:
    if r.note:
        stdout.print(r.note, highlight=False, markup=False)
    missing = r.map_locations - r.n_locations
    head = f"{r.map}: {r.n_locations} locations clustered ({r.model} / {r.pooling} / {r.precision})"
    if missing:
        head += f"; {missing} without an embedding left out"
    stdout.print(head, highlight=False, markup=False)
    if len(r.runs) == 1:
        run = r.run
        state = "reused (same embeddings and parameters)" if run.reused else "new"
        stdout.print(
            f"{run.name}  run {run.run_id}  k={run.k}  {state}\n"
            f"inertia {_num(run.inertia, 1)}  silhouette {_num(run.silhouette)}"
            + (f"  numbered to match {run.aligned_to}" if run.aligned_to else ""),
            highlight=False,
            markup=False,
        )
        stdout.print("sizes: " + "  ".join(f"{c}:{n}" for c, n in enumerate(run.sizes)), highlight=False, markup=False)
        if run.noise:
            stdout.print(f"noise: {run.noise} places in no cluster (cluster -1)", highlight=False, markup=False)
        print_duplicates(run)
        print_warnings(run)
        return
    table = Table("k", "run", "inertia", "silhouette", "smallest", "largest", "", title=f"k sweep {r.sweep_id}")
    for run in r.runs:
        mark = "<- recommended" if run.k == r.recommended_k else ""
        sizes = run.sizes or [0]
        table.add_row(str(run.k), run.name + (" (reused)" if run.reused else ""), _num(run.inertia, 1), _num(run.silhouette), str(min(sizes)), str(max(sizes)), mark)
    print_table(table)
    if r.recommendation:
        stdout.print(r.recommendation, highlight=False, markup=False)
    for run in r.runs:
        print_duplicates(run)
        print_warnings(run)


def print_duplicates(run: RunSummary) -> None:
    """How many pairs of near-identical panoramas the run's clusters hold, when there are any."""
    if run.duplicates:
        stdout.print(
            f"{run.name}: {run.duplicates} pairs of near-identical panoramas (cosine >= {DUPLICATE_COSINE}; "
            f"SELECT * FROM duplicate_panoramas WHERE name = '{run.name}')",
            highlight=False,
            markup=False,
        )


def print_warnings(run: RunSummary) -> None:
    """The run's warnings (degenerate input), one line each, on stdout with the summary."""
    for w in run.warnings:
        stdout.print(f"warning: {run.name} (k={run.k}, {run.nonempty} non-empty clusters): {w}", highlight=False, markup=False)


def runs(
    ctx: typer.Context,
    map_name: Annotated[Optional[str], typer.Option("--map", help="Only this map's runs.")] = None,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """List cluster runs: a header row, then per run every parameter and metric.

    Lineage: method (cluster | assign) and parent (the run an assign run grew from).
    Metrics measured in a PCA space are marked *; runs made on an earlier version of their map
    (re-ingested with other content since) are marked STALE; runs whose input was degenerate
    carry their WARNING."""
    inv = invocation(ctx, lake, json_output)
    found = list_runs(inv.lake, map_name)
    names = best_names(inv.lake, map_name)
    listing = [{**asdict(r), "cluster_names": names.get(r.run_id, {})} for r in found]
    emit(inv, listing, lambda: print_runs(found, map_name, names))


RUN_COLUMNS = (
    # header, alignment (< left, > right)
    ("run", "<"), ("run_id", "<"), ("k", ">"), ("clusters", ">"), ("algorithm", "<"), ("n_init", ">"),
    ("pca", ">"), ("seed", ">"), ("places", ">"), ("inertia", ">"), ("silhouette", ">"), ("embeddings", "<"),
    ("method", "<"), ("parent", "<"), ("created", "<"), ("notes", "<"),
)


def run_row(r: RunInfo) -> list[str]:
    """One run as the cells of ``svcluster runs``; metrics measured in a PCA space end in ``*``."""
    in_pca = "*" if r.pca_dims else ""
    pca = "-"
    if r.pca_dims:
        kept = f" ({100 * r.pca_explained_variance:.0f}%)" if r.pca_explained_variance is not None else ""
        pca = f"{r.pca_dims}{kept}"
    notes = []
    if r.stale:
        notes.append(f"STALE: made on an earlier version of {r.map}")
    if r.warnings:
        notes.append("WARNING: " + "; ".join(r.warnings))
    if r.aligned_to_name:
        notes.append(f"numbered like {r.aligned_to_name}")
    if r.duplicates:
        notes.append(f"{r.duplicates} duplicate panorama pairs")
    return [
        r.name,
        r.run_id,
        str(r.k),
        "-" if r.nonempty_clusters is None else str(r.nonempty_clusters),
        r.algorithm,
        "-" if r.n_init is None else str(r.n_init),
        pca,
        str(r.seed),
        str(r.n_locations),
        ("-" if r.inertia is None else f"{r.inertia:.1f}{in_pca}"),
        ("-" if r.silhouette is None else f"{r.silhouette:.3f}{in_pca}"),
        " ".join(v for v in (r.model, r.pooling, r.precision) if v),
        r.method,
        r.parent_name or r.parent_run_id or "-",
        str(r.created_at)[:19],
        "; ".join(notes),
    ]


def print_runs(found: list[RunInfo], map_name: str | None, names: dict[str, dict[int, str]]) -> None:
    """The runs as a table with a header row; never cut to the terminal's width."""
    if not found:
        stdout.print(f"no cluster runs{' of ' + map_name if map_name else ''} yet (svcluster cluster --map NAME)", highlight=False, markup=False)
        return
    rows = [run_row(r) for r in found]
    header = [h for h, _ in RUN_COLUMNS]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, (_, a), w in zip(cells, RUN_COLUMNS, widths)).rstrip()

    lines = [line(header)]
    for r, row in zip(found, rows):
        lines.append(line(row))
        if names.get(r.run_id):
            lines.append(" " * widths[0] + "  names: " + "; ".join(f"{c}: {n}" for c, n in sorted(names[r.run_id].items())))
    footnotes = []
    if any(r.nonempty_clusters is not None and r.nonempty_clusters < r.k for r in found):
        footnotes.append("clusters: clusters holding a place; fewer than k: degenerate input (see its WARNING)")
    if any(r.pca_dims for r in found):
        footnotes.append("*: inertia and silhouette measured in the PCA space (pca: its dimensions and the share of variance it kept), not comparable with runs without PCA")
    if any(r.stale for r in found):
        footnotes.append("STALE: the map was re-ingested with other content after the run; places added since are not in it")
    stdout.print("\n".join(lines + ([""] + footnotes if footnotes else [])), highlight=False, markup=False, soft_wrap=True)


def compare(
    ctx: typer.Context,
    run_a: Annotated[str, typer.Argument(help="A run: run_id or MAP@vN.")],
    run_b: Annotated[Optional[str], typer.Argument(help="The run to compare with.")] = None,
    tags: Annotated[bool, typer.Option("--tags", help="Compare with the tags already in the map instead.")] = False,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Compare two runs (ARI, NMI, contingency, movers with where they are and a Street View
    link), or a run with the map's own tags."""
    inv = invocation(ctx, lake, json_output)
    if tags == (run_b is not None):
        raise SvclusterError("give either a second run or --tags: svcluster compare RUN_A (RUN_B | --tags)")
    result = compare_with_tags(inv.lake, run_a) if tags else compare_runs(inv.lake, run_a, run_b)
    emit(inv, result, lambda: print_comparison(result))


def print_comparison(c: Comparison) -> None:
    vs_tags = c.run_b is None
    what = "location-tag pairs" if vs_tags else "locations in both"
    lines = [f"{c.a} vs {c.b}: {c.compared} {what}", f"adjusted Rand index {c.ari:.3f}   normalised mutual information {c.nmi:.3f}"]
    if vs_tags:
        lines.append(f"{c.only_a} clustered locations carry no tag of their own (left out); svcluster tags ignored")
    else:
        lines.append(f"{c.changed} locations changed cluster number ({c.unmatched} outside the best one-to-one match of clusters)")
        if c.only_a or c.only_b:
            lines.append(f"{c.only_a} only in {c.a}, {c.only_b} only in {c.b}")
    stdout.print("\n".join(lines), highlight=False, markup=False)
    columns = sorted({cell.b for cell in c.contingency}, key=lambda b: (not b.isdigit(), int(b) if b.isdigit() else 0, b))
    if len(columns) <= MAX_CONTINGENCY_COLUMNS:
        counts = {(cell.a, cell.b): cell.locations for cell in c.contingency}
        rows = sorted({cell.a for cell in c.contingency})
        table = Table(f"{c.a} \\ {c.b}", *columns, "purity", title="contingency")
        purity = {p.category: p for p in c.purity}
        for a in rows:
            p = purity.get(str(a))
            table.add_row(str(a), *[str(counts.get((a, b), "")) for b in columns], f"{p.purity:.0%} {p.dominant}" if p else "")
        print_table(table)
    else:
        stdout.print(f"contingency: {len(c.contingency)} non-empty cells (see --json or the cluster_contingency SQL macro)", highlight=False, markup=False)
    if vs_tags:
        stdout.print(
            "per tag, the cluster holding most of it: "
            + ", ".join(f"{s.category} {s.dominant_locations}/{s.size} in {s.dominant}" for s in c.spread),
            highlight=False,
            markup=False,
        )
    elif c.movers:
        shown = c.movers[:MOVERS_PRINTED]
        lines = [f"movers (first {len(shown)} of {c.changed}; all: the cluster_movers SQL macro): location, {c.a} -> {c.b}, where, Street View"]
        for m in shown:
            where = "-" if m.lat is None or m.lng is None else f"{m.lat:.5f}, {m.lng:.5f}"
            region = f"  {m.region_code}" if m.region_code else ""
            lines.append(f"  {m.location_id}  {m.cluster_a} -> {m.cluster_b}  {where}{region}  {m.url or ''}".rstrip())
        stdout.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command()(cluster)
    app.command()(runs)
    app.command()(compare)
