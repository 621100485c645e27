"""``svcluster run`` (a map through the whole Prefect pipeline) and ``svcluster demo`` (the same,
offline, on a generated map of Chile).

Both start the ``svcluster-pipeline`` flow in this process: against the Prefect server at
``PREFECT_API_URL`` when set, else a temporary local API that lives as long as the command.
Prefect's own console logs are kept to warnings (``--verbose`` shows every flow and task run);
progress bars and the summary are the command's.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from svcluster.flows.cli import JsonOption, LakeOption, emit, invocation, stdout
from svcluster.flows.options import with_options
from svcluster.tasks.cluster.step import ClusterOptions
from svcluster.tasks.embed.precision_auto import decision_lines
from svcluster.tasks.embed.step import EmbedOptions
from svcluster.tasks.fetch.step import FetchOptions
from svcluster.tasks.errors import SvclusterError

RUNNERS = ("thread", "dask")

# Modules a pipeline run imports on first use. When this command started its own temporary
# Prefect API, they are imported while that server boots (on the other core), not after.
PIPELINE_MODULES = (
    "svcluster.flows.pipeline", "prefect.flow_engine", "prefect.task_engine", "prefect.artifacts",
    "fastapi.encoders", "sklearn.metrics", "PIL.JpegImagePlugin", "PIL.PngImagePlugin",
)  # fmt: skip


def runner_options(runner: str, dask_address: str | None, dask_workers: int, threads: int) -> Any:
    from svcluster.flows.runner import RunnerOptions

    if runner not in RUNNERS:
        raise SvclusterError(f"--runner must be one of {', '.join(RUNNERS)}, not {runner!r}")
    if not 1 <= threads <= 64:
        raise SvclusterError(f"--threads must be from 1 to 64, not {threads}")
    if not 1 <= dask_workers <= 256:
        raise SvclusterError(f"--dask-workers must be from 1 to 256, not {dask_workers}")
    if dask_address and runner != "dask":
        runner = "dask"
    return RunnerOptions(kind=runner, dask_address=dask_address, dask_workers=dask_workers, threads=threads)


def start_prefect(verbose: bool, debug: bool = False) -> Any:
    """Prepare Prefect before it is imported, starting the temporary API now when there is no
    server (see ``svcluster.flows.prefect_env``); the command checks its options while it boots, then
    ``load_pipeline``. Unless ``verbose`` or ``debug``, the runs' own reports of a failure
    stay off the console: the command prints it as one line."""
    from svcluster.flows.prefect_env import prepare_prefect

    return prepare_prefect("INFO" if verbose else "WARNING", start_api=True, quiet_failures=not (verbose or debug))


def load_pipeline(target: Any) -> None:
    """Import the pipeline's modules while the temporary API (if this command started one) boots."""
    import importlib

    for module in PIPELINE_MODULES if target.temporary is not None else ():
        importlib.import_module(module)


def debug_requested(ctx: typer.Context) -> bool:
    state = ctx.find_root().obj
    return bool(getattr(state, "debug", False))


# ---- every option checked before any work -------------------------------------------------------


def checked_model(model: str, device: str, precision: str) -> None:
    """The embed model can be used here: device and precision exist for it, a folder exists,
    and a hub id is in the cache or the hub answers (what embed itself would find out only
    after the fetch)."""
    from svcluster.tasks.embed.models import choose_model, hub_load_options, is_baseline, local_folder, looks_like_path

    choose_model(model, device, precision)
    if is_baseline(model) or local_folder(model) is not None:
        return
    if looks_like_path(model):
        raise SvclusterError(f"--model {model}: no such model folder")
    hub_load_options(model)


def checked_step_params(fetch: Any, embed: Any, cluster: Any, tag_format: str | None = None) -> dict[str, Any]:
    """The pipeline's FetchParams, EmbedParams and ClusterParams from the command's checked
    options, the model checked too (a folder exists, a hub id is cached or the hub answers);
    ``tag_format`` too when there is an export. The errors name the option, in one line."""
    from svcluster.flows.params import ClusterParams, EmbedParams, FetchParams
    from svcluster.tasks.embed.models import is_baseline
    from svcluster.tasks.export.step import check_tag_format

    checked_model(embed.model, embed.device, embed.precision)
    if tag_format is not None:
        check_tag_format(tag_format)
        if "{name}" in tag_format and is_baseline(embed.model):
            raise SvclusterError("--tag-format uses {name}, but --model baseline cannot name clusters (it has no text model)")
    embed = replace(embed, size=fetch.size, fov=fetch.fov, pitch=fetch.pitch)  # the views the run fetches are the ones it embeds
    return dict(fetch=FetchParams.from_options(fetch), embed=EmbedParams.from_options(embed), cluster=ClusterParams.from_options(cluster))


def checked_output(path: Path, option: str) -> Path:
    """An output file the command can write at the end: not a folder, and inside a folder that
    exists (or can be made) and can be written. Returns it absolute."""
    path = path.expanduser().resolve()
    if path.is_dir():
        raise SvclusterError(f"{option} {path}: is a folder; give a file name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SvclusterError(f"{option} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SvclusterError(f"{option} {path}: cannot write in {parent}")
    return path


def progress_bars(enabled: bool):
    """Console progress bars for the flows this command runs (off with --json)."""
    if not enabled:
        return nullcontext()
    from svcluster.flows.artifacts import console_progress
    from svcluster.flows.commands.progress import RichBar

    return console_progress(lambda unit: RichBar(unit=unit))


RunnerOpt = Annotated[str, typer.Option("--runner", help="Where tasks run: thread (this process) or dask.")]
DaskAddressOpt = Annotated[
    Optional[str], typer.Option("--dask-address", help="Dask scheduler (tcp://host:8786); without it --runner dask starts a LocalCluster.")
]
DaskWorkersOpt = Annotated[int, typer.Option("--dask-workers", help="LocalCluster worker processes.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="Task threads for --runner thread.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's flow and task run logs.")]


@with_options("run", fetch=FetchOptions, embed=EmbedOptions, cluster=ClusterOptions)
def run(
    ctx: typer.Context,
    map_file: Annotated[Path, typer.Argument(help="Map JSON (GeoGuessr, Vali, map-generator, map-making.app).")],
    map_name: Annotated[Optional[str], typer.Option("--map", help="Map name in the lake [default: the file's stem].")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Tagged map JSON [default: out/<map>.tagged.json].")] = None,
    summary: Annotated[Optional[Path], typer.Option("--summary", help="Run summary markdown [default: out/<map>.summary.md].")] = None,
    tag_format: Annotated[str, typer.Option("--tag-format", help="Tag template: {k}, {cluster}, {run}, {name}.")] = "k{k}-c{cluster}",
    refresh_panos: Annotated[
        bool, typer.Option("--refresh-panos", help="Export: write refreshed pano ids in place of stale ones (see `export --help`).")
    ] = False,
    tag_outliers: Annotated[
        bool, typer.Option("--tag-outliers", help="Export: also tag the run's outliers `outlier` (see `export --help`).")
    ] = False,
    runner: RunnerOpt = "thread",
    dask_address: DaskAddressOpt = None,
    dask_workers: DaskWorkersOpt = 2,
    threads: ThreadsOpt = 2,
    verbose: VerboseOpt = False,
    lake: LakeOption = None,
    json_output: JsonOption = False,
    *,
    fetch: Any,
    embed: Any,
    cluster: Any,
) -> None:
    """Run the whole pipeline on a map as one Prefect flow: ingest, fetch, embed, cluster, export.

    Resumable: a rerun does only what the lake is missing. Needs GOOGLE_MAPS_API_KEY for the fetch.
    """
    inv = invocation(ctx, lake, json_output)
    if not map_file.is_file():
        raise SvclusterError(f"{map_file}: no such map file")
    # Every option of every step is checked before any work (and before Prefect logs a line),
    # while the temporary Prefect API boots.
    target = start_prefect(verbose, debug_requested(ctx))
    from svcluster.flows.pipeline import default_outputs
    from svcluster.tasks.ingest.locations import validate_map_name

    if map_name is not None:
        validate_map_name(map_name)
    params = checked_step_params(fetch, embed, cluster, tag_format=tag_format)
    name = map_name or map_file.stem
    default_export, default_summary = default_outputs(name)
    export_out = checked_output(out or Path(default_export), "--out")
    summary_out = checked_output(summary or Path(default_summary), "--summary")
    runner_opts = runner_options(runner, dask_address, dask_workers, threads)
    load_pipeline(target)
    from svcluster.flows.pipeline import pipeline

    started = time.perf_counter()
    with target.session(), progress_bars(not inv.json):
        result = pipeline(
            map_file=str(map_file.resolve()),
            lake=inv.settings.lake,
            map_name=map_name,
            export_out=str(export_out),
            summary_out=str(summary_out),
            tag_format=tag_format,
            refresh_panos=refresh_panos,
            tag_outliers=tag_outliers,
            runner=runner_opts,
            **params,
        )
    elapsed = time.perf_counter() - started
    emit(inv, result, lambda: print_pipeline(result, elapsed, target.describe()))


def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's map, lake, export and summary.")] = Path("svcluster-demo"),
    model: Annotated[str, typer.Option("--model", help="'baseline' (no weights) or a cached CLIP such as geolocal/StreetCLIP.")] = "baseline",
    locations: Annotated[int, typer.Option("--locations", help="Size of the generated Chile map.", min=20, max=20000)] = 1000,
    k: Annotated[int, typer.Option("--k", help="Clusters.", min=2, max=100)] = 5,
    runner: RunnerOpt = "thread",
    dask_address: DaskAddressOpt = None,
    dask_workers: DaskWorkersOpt = 2,
    threads: ThreadsOpt = 2,
    verbose: VerboseOpt = False,
    lake: LakeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run the whole pipeline offline on a generated map of Chile: no network, no API key.

    A local Street View look-alike on 127.0.0.1 serves a landscape per latitude band (desert,
    central valley, forest, Patagonian steppe, ice); the real fetch, embed, cluster, compare
    and export steps run as one Prefect flow. Outputs go under --out (lake included).
    """
    state_lake = (ctx.find_root().obj.lake if ctx.find_root().obj else None)
    inv = invocation(ctx, lake, json_output)
    target = start_prefect(verbose, debug_requested(ctx))
    checked_model(model, "auto", "auto")  # before any work: a model that is not here fails now
    if out.exists() and not out.is_dir():
        raise SvclusterError(f"--out {out}: is a file; the demo needs a folder")
    runner_opts = runner_options(runner, dask_address, dask_workers, threads)
    load_pipeline(target)
    from svcluster.flows.demo import run_demo

    with target.session(), progress_bars(not inv.json):
        result = run_demo(
            out,
            lake=lake or state_lake,
            model=model,
            locations=locations,
            k=k,
            runner=runner_opts,
        )
    emit(inv, result, lambda: print_demo(result, target.describe()))


# ---- summaries ---------------------------------------------------------------------------------


def _step_lines(r: Any) -> list[str]:
    f, e, c, x = r.fetch, r.embed, r.cluster, r.export
    s = r.seconds
    statuses = {row["status"]: row["views"] for row in f.status_counts}
    run = c.run
    lines = [
        f"  ingest   {r.ingest.locations} locations"
        + (f" on {r.ingest.places} places" if r.ingest.places != r.ingest.locations else "")
        + (" (unchanged)" if r.ingest.unchanged else f" ({r.ingest.dialect})")
        + f"  [{s.get('ingest', 0):.1f} s]",
        f"  fetch    {statuses.get('ok', 0)} views ok, {statuses.get('no_imagery', 0)} no imagery, "
        f"{statuses.get('failed', 0)} failed; {f.ok + f.no_imagery + f.failed} fetched now in {f.batches} batches"
        f"  [{s.get('fetch', 0):.1f} s]",
        f"  embed    {e.locations_planned} locations embedded now with {e.model} ({e.pooling}) in {e.batches} batches"
        f"  [{s.get('embed', 0):.1f} s]",
        f"  cluster  {run.name}: k={run.k}, silhouette {run.silhouette:.3f}" if run.silhouette is not None else f"  cluster  {run.name}: k={run.k}",
    ]
    decision = getattr(e, "precision_decision", None)
    if decision is not None:  # how auto was resolved (the figures: `svcluster embed` or --json)
        lines.insert(-1, f"           {decision_lines(decision)[0]}")
    failed_views = int((getattr(e, "totals", None) or {}).get("views_failed", 0))
    if failed_views:  # blob missing or unreadable: left out, marked failed
        lines.insert(-1, f"           {failed_views} views failed (blob missing or unreadable): not embedded; "
                         f"`svcluster fetch --map {r.map}` fetches them again")
    if run.reused:
        lines[-1] += " (reused: same embeddings and parameters)"
    lines[-1] += f"  [{s.get('cluster', 0):.1f} s]"
    if c.result.grow_note:
        lines.append(f"           grown map: {c.result.grow_note}")
    if c.vs_tags is not None:
        lines.append(f"           vs the map's own tags: ARI {c.vs_tags.ari:.2f}, NMI {c.vs_tags.nmi:.2f} over {c.vs_tags.compared} tagged locations")
    if c.vs_previous is not None:
        lines.append(f"           vs {c.previous}: {c.vs_previous.changed} of {c.vs_previous.compared} locations changed cluster")
    lines.append(f"  export   {x.tagged} of {x.locations} locations tagged  [{s.get('export', 0):.1f} s]")
    return lines


def print_pipeline(r: Any, elapsed: float, target: str) -> None:
    lines = [f"{r.map}: pipeline finished in {elapsed:.0f} s ({r.runner} runner, {target})", *_step_lines(r), ""]
    lines += [
        f"Tagged map:   {r.export.out}",
        f"Run summary:  {r.summary_file}",
        f"Lake:         {r.lake}",
    ]
    stdout.print("\n".join(lines), highlight=False, markup=False)


def print_demo(d: Any, target: str) -> None:
    r = d.pipeline
    local = "://" not in d.lake
    lines = [
        f"svcluster demo: {d.locations} Chile locations clustered offline in {d.seconds:.0f} s ({target})",
        *_step_lines(r),
        "",
        "Where everything is:",
        f"  Tagged map (import into map-making.app):  {d.export_file}",
        f"  Run summary (sizes, metrics, comparisons): {d.summary_file}",
        *(
            [f"  Report (map, clusters, look-alikes):       {Path(d.lake) / 'reports' / r.cluster.run.run_id / 'report.html'}"]
            if "://" not in d.lake and (Path(d.lake) / "reports" / r.cluster.run.run_id / "report.html").exists()
            else [f"  Report (map, clusters, look-alikes):       svcluster --lake {d.lake} report {r.cluster.run.name} --out report/"]
        ),
        f"  SQL lake (Delta tables + DuckDB views):    {d.lake}",
        f"      svcluster --lake {d.lake} sql \"SELECT cluster, count(*) AS n FROM cluster_assignments GROUP BY ALL ORDER BY 1\"",
    ]
    if local:
        lines.append(f"      cd {d.lake} && duckdb -init svcluster.sql        (the plain DuckDB CLI, same views)")
    lines += [
        "",
        "On a real map, with a Street View key and StreetCLIP:",
        "  export GOOGLE_MAPS_API_KEY=...            # Street View Static API key",
        "  svcluster run MY_MAP.json --model geolocal/StreetCLIP --k 2..12",
        "  (StreetCLIP is fetched from Hugging Face once; `svcluster demo --model geolocal/StreetCLIP` uses it here too)",
    ]
    stdout.print("\n".join(lines), highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(demo)
