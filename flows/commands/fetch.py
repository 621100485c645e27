"""``svcluster fetch``: Street View images of a map's locations into the lake (or imported from
the original notebook's folder), with a progress bar and counts per status at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from svcluster.flows.cli import JsonOption, LakeOption, emit, invocation
from svcluster.flows.commands.progress import RichBar
from svcluster.flows.options import with_options
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.fetch.step import FetchOptions, FetchResult, fetch_map
from svcluster.tasks.fetch.folder_import import import_folder


@with_options(options=FetchOptions)
def fetch(
    ctx: typer.Context,
    map_name: Annotated[str, typer.Option("--map", help="Map name in the lake (as ingested).")],
    from_folder: Annotated[
        Optional[Path],
        typer.Option("--from-folder", help="Import panoramas/location_<i>/heading_<h>.jpg instead of fetching."),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Read every ok image blob of the map and check its sha256; fetch again those that changed."),
    ] = False,
    lake: LakeOption = None,
    json_output: JsonOption = False,
    *,
    options: FetchOptions,
) -> None:
    """Fetch the Street View images of a map (metadata first, then one image per heading).

    Resumable: a rerun fetches only views that are missing or failed, and no panorama and
    heading is bought twice. A pano id that no longer exists is looked up again by location
    (free) before a place is called no_imagery. Needs GOOGLE_MAPS_API_KEY
    or GSV_API_KEY (and GOOGLE_MAPS_SIGNING_SECRET if the key requires signed URLs), except with
    --from-folder; SVCLUSTER_STREETVIEW_URL points it at another Static API base URL.

    Repairs images: a view whose blob is missing from the lake (one listing) or was found
    unreadable by embed is fetched again, and --verify also reads every blob and re-fetches
    those whose bytes no longer match their sha256. Each such view is one billed image request.
    """
    inv = invocation(ctx, lake, json_output)
    bar = RichBar(unit="img", enabled=not inv.json)
    if from_folder is not None:
        result = import_folder(inv.lake, map_name, from_folder, options, bar)
    else:
        result = fetch_map(inv.lake, map_name, inv.settings, options, bar, verify=verify)
    emit(inv, result, summary_text(result))
    failure = all_failed(result)
    if failure:
        raise SvclusterError(failure)


def summary_text(r: FetchResult) -> str:
    """The human summary: counts per status, requests, speed, and the commonest failures."""
    verb = "imported from the folder" if r.source == "folder" else "fetched"
    lines = [
        f"{r.map}: {r.views} views of {r.locations} locations — {r.ok} ok, {r.no_imagery} no imagery, "
        f"{r.failed} failed, {r.skipped} already in the lake",
    ]
    if r.source == "folder":
        lines.append(f"{r.ok} {verb} in {r.elapsed_seconds:.1f} s; {r.missing_files} views had no file, {r.unmatched_files} files matched no view")
    else:
        lines.append(
            f"{r.requests} requests ({r.metadata_requests} metadata, {r.image_requests} image) in {r.elapsed_seconds:.1f} s"
            + (f", {r.images_per_second:,.1f} img/s" if r.ok else "")
        )
    notes = (
        (r.refreshed, "places had a deleted pano id: looked up again by location (free), the new id recorded"),
        (r.reused, "views reuse an image already bought for the same panorama and heading (no request)"),
        (r.third_party_skipped, "views of third-party photospheres not bought (--official-only; fetch without it to buy them)"),
    )
    lines += [f"{n} {text}" for n, text in notes if n]
    lines += blob_check_lines(r)
    for reason, n in list(r.failure_reasons.items())[:5]:
        lines.append(f"  failed {n}x: {reason}")
    if r.failed:
        lines.append("rerun the same command to retry the failed views")
    if r.orphan_blobs_removed:
        lines.append(f"removed {r.orphan_blobs_removed} orphaned blobs left by an interrupted run")
    return "\n".join(lines)


def blob_check_lines(r: FetchResult) -> list[str]:
    """What the blob check before the fetch found (views fetched again because of their blob)."""
    found = (
        (r.blobs_missing, "views had no blob in the lake"),
        (r.blobs_unreadable, "views had a blob embed could not read (removed)"),
        (r.blobs_changed, "views had a blob whose bytes no longer match their sha256 (removed)"),
    )
    lines = [f"{n} {text}: marked failed and fetched again" for n, text in found if n]
    if r.verified and not (r.blobs_missing or r.blobs_changed or r.blobs_unreadable):
        lines.append("--verify: every ok blob of the map is present and matches its sha256")
    return lines


def all_failed(r: FetchResult) -> str | None:
    """Why the exit code is not 0: every view this fetch tried failed (a partial failure exits
    0; its summary counts the failed views and says a rerun retries them)."""
    if not r.failed or r.ok or r.no_imagery or r.third_party_skipped:
        return None
    commonest = next(iter(r.failure_reasons), None)
    why = f"; the commonest reason: {commonest}" if commonest else ""
    return f"every view this fetch tried failed ({r.failed} views{why}): nothing was fetched; rerun the same command to retry them"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command()(fetch)
