"""Export: a map written back in its own shape, with a cluster run's tag on every location.

The objects come from the SQL macro ``export_locations`` (``sql/export/export.sql``); this module only
frames them as the input was framed (a bare array stays an array, ``customCoordinates`` keeps
its ``name`` and every other top-level field) and writes the file atomically.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from svcluster.sql import load_sql
from svcluster.tasks.errors import LakeError, NotFoundError, SvclusterError
from svcluster.tasks.files import atomic_write
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.cluster.runs import resolve_run, run_coverage

log = logging.getLogger("svcluster.export")

DEFAULT_TAG_FORMAT = "k{k}-c{cluster}"
DEFAULT_NOISE_FORMAT = "k{k}-noise"  # the tag of a place HDBSCAN left in no cluster (cluster -1)
OUTLIER_TAG = "outlier"  # --tag-outliers: the places of the run's cluster_outliers
PLACEHOLDERS = ("{k}", "{cluster}", "{run}", "{name}")
_MARK = "\x00svcluster-locations\x00"


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, how many objects it holds, how many got a tag, and how many pano
    ids were refreshed (``--refresh-panos``)."""

    out: str
    map: str
    run: str | None
    locations: int
    tagged: int
    untagged: int
    refreshed_panos: int = 0
    outliers: int = 0  # objects tagged ``outlier`` (--tag-outliers)
    not_in_run: int = 0  # untagged although their place has an embedding: the run was made before it
    without_embedding: int = 0  # untagged for want of an embedding
    stale_note: str | None = None  # the run is of an earlier version of the map


def check_tag_format(tag_format: str, flag: str = "--tag-format", needs_cluster: bool = True) -> str:
    spec = re.search(r"\{(k|cluster|run|name)[:!][^}]*\}", tag_format)
    if spec:
        raise SvclusterError(
            f"{flag}: format specs such as {spec.group(0)!r} are not supported; use {', '.join(PLACEHOLDERS)} "
            "as they are (e.g. 'k{k}-c{cluster}')"
        )
    if needs_cluster and not any(p in tag_format for p in ("{cluster}",)):
        raise SvclusterError(f"{flag} {tag_format!r} must contain {{cluster}}")
    if not tag_format or len(tag_format) > 200 or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in tag_format):
        raise SvclusterError(f"{flag} must be 1 to 200 printable characters")
    unknown = set(re.findall(r"\{[^}]*\}", tag_format)) - set(PLACEHOLDERS)
    if unknown:
        raise SvclusterError(f"{flag} has unknown placeholders {sorted(unknown)}; use {', '.join(PLACEHOLDERS)}")
    return tag_format


def check_noise_format(noise_format: str) -> str:
    """The template of HDBSCAN's noise tag (``k{k}-noise``): the placeholders of --tag-format,
    {cluster} not needed (it is -1)."""
    return check_tag_format(noise_format, "--noise-tag", needs_cluster=False)


def export_map(
    lake: Lake,
    out: str | Path,
    *,
    map_name: str | None = None,
    run: str | None = None,
    tag_format: str = DEFAULT_TAG_FORMAT,
    refresh_panos: bool = False,
    noise_format: str = DEFAULT_NOISE_FORMAT,
    tag_outliers: bool = False,
) -> ExportResult:
    """Write every object of ``map_name`` (or of the map of ``run``) to ``out`` in input order,
    tagged by ``run`` when given; with ``refresh_panos`` the pano ids the fetch found stale are
    replaced by the ids it was refreshed to (by default the file's own ids are kept). A place
    HDBSCAN left in no cluster is tagged by ``noise_format``; with ``tag_outliers`` the run's
    outliers (the ``cluster_outliers`` view) also get the tag ``outlier``."""
    run_ref = resolve_run(lake, run) if run else None
    name = run_ref.map if run_ref else map_name
    if not name:
        raise SvclusterError("name a run or a map to export")
    check_tag_format(tag_format)
    check_noise_format(noise_format)
    if tag_outliers and not run_ref:
        raise SvclusterError("--tag-outliers needs a RUN: outliers are places far from their cluster's centroid")
    if run_ref and "{name}" in tag_format:
        from svcluster.tasks.cluster.naming import require_names

        require_names(lake, run_ref)
    info = lake.query(load_sql("ingest/map_envelope"), {"map": name}).to_pylist()
    if not info:
        raise NotFoundError(f"no map named {name!r} in the lake at {lake.uri} (ingest it first)")
    params = {
        "map": name,
        "run": run_ref.run_id if run_ref else None,
        "tag_format": tag_format,
        "refresh": refresh_panos,
        "noise_format": noise_format,
        "outliers": tag_outliers,
    }
    if run_ref:
        record_exported_tags(lake, name, run_ref.run_id, tag_format, noise_format, tag_outliers)
    head, tail = frame(info[0]["format"], info[0]["envelope"])
    total = tagged = refreshed = outliers = 0
    out_path = Path(out)
    try:
        with atomic_write(out_path, text=True) as fh:
            fh.write(head)
            for batch in lake.iter_batches(load_sql("export/map"), params):
                objects = batch.column("json").to_pylist()
                tagged += len(objects) - batch.column("tag").null_count
                refreshed += pc.sum(batch.column("refreshed")).as_py() or 0
                outliers += pc.sum(batch.column("outlier")).as_py() or 0
                fh.write(("," if total else "") + "\n" + ",\n".join(objects))
                total += len(objects)
            fh.write("\n" + tail)
    except OSError as exc:  # a full or read-only disk: one line naming the file
        raise SvclusterError(f"cannot write the export {out_path}: {exc.strerror or exc}") from None
    untagged = total - tagged if run_ref else 0
    not_in_run = without = 0
    if run_ref and untagged:
        coverage = run_coverage(lake, run_ref)
        not_in_run, without = coverage.objects_embedded_not_in_run, coverage.objects_without_embedding
    return ExportResult(
        str(out_path), name, run_ref.name if run_ref else None, total, tagged, untagged, refreshed, outliers,
        not_in_run, without, run_ref.stale_note if run_ref else None,
    )


def record_exported_tags(
    lake: Lake, map_name: str, run_id: str, tag_format: str, noise_format: str = DEFAULT_NOISE_FORMAT, outliers: bool = False
) -> None:
    """Remember the tags this export writes into ``map_name`` (before the file is written, so a
    file never holds a tag the lake does not know as svcluster's): cluster and noise tags, and
    ``outlier`` with ``outliers``. On a lake that cannot be written the export goes on, with a
    warning: a later export would keep these tags."""
    params = {"run": run_id, "tag_format": tag_format, "noise_format": noise_format, "outliers": outliers}
    tags = lake.query(load_sql("export/run_tags"), params).column("tag").to_pylist()
    rows = pa.table(
        {
            "map": [map_name] * len(tags),
            "tag": tags,
            "tag_format": [tag_format] * len(tags),
            "run_id": [run_id] * len(tags),
        }
    )
    try:
        lake.append("exported_tags", rows)
    except LakeError as exc:
        log.warning("could not record the exported tags in the lake (%s); a later export will not know them as svcluster's", exc)


def frame(fmt: str, envelope: str | None) -> tuple[str, str]:
    """The text before and after the list of location objects, in the input's own shape."""
    if fmt == "array" or envelope is None:
        return "[", "]\n"
    doc = json.loads(envelope)
    doc[fmt] = _MARK  # the key that held the locations (customCoordinates, coordinates)
    text = json.dumps(doc, ensure_ascii=False)
    head, tail = text.split(json.dumps(_MARK), 1)
    return head + "[", "]" + tail + "\n"
