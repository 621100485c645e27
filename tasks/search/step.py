"""Search a map's places by words (``search``) or by example (``similar``).

Both rank the places of one map (or of every map) by cosine between a query vector and the
place embeddings of one vector set (model / pooling / precision, chosen as ``cluster`` chooses
them). The matrix comes from ``svcluster.tasks.cluster.vectors.load_vectors`` (and its cache). Up to
``svcluster.tasks.search.index.EXACT_MAX_ROWS`` places the search is exact (one matrix-vector
product: milliseconds at the sizes maps have); above, it goes through the vector set's approximate
index (``svcluster.tasks.search.index``: built once, stored in the lake, rebuilt when the vectors
change). The result says which (``method``: exact | ivf).

Query vectors:

- text: the model's text tower (``svcluster.tasks.embed.models.text_features``), the text as the user wrote it
  (CLIP was trained on captions: "a photo of a red dirt road" works better than "red dirt"; see
  docs/search.md). The baseline embedder has no text tower and says so.
- a place of the lake: its own embedding (the place itself is left out of the results);
- a coordinate: the embedding of the map's place nearest to it;
- pictures: each through the same preprocessing and image tower as the views
  (``Embedder.prepare`` / ``embed``), several pooled as a place's views are
  (``svcluster.tasks.embed.step.pool_views``; stitched into one image for a ``stitched`` vector set).

Every request is recorded in the lake table ``searches``; ``--out`` writes the matched places'
objects as a map file in the input's shape with a tag appended, ready for map-making.app.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from svcluster.sql import load_sql
from svcluster.tasks.cluster.step import ClusterOptions, choose_embeddings
from svcluster.tasks.embed.step import pool_views
from svcluster.tasks.errors import LakeError, NotFoundError, SvclusterError
from svcluster.tasks.files import atomic_write
from svcluster.tasks.export.step import frame
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.embed.models import is_baseline, load_embedder, text_features
from svcluster.tasks.cluster.naming import normalise_rows
from svcluster.tasks.embed.preprocess import decode_image, stitch_views
from svcluster.tasks.cluster.vectors import Vectors, load_vectors
from svcluster.tasks.search import index as search_index
from svcluster.tasks.search.index import IndexUse

log = logging.getLogger("svcluster.search")

DEFAULT_TOP_SEARCH = 50
DEFAULT_TOP_SIMILAR = 20
MAX_TOP = 10_000
NO_TEXT_TOWER = "text search needs a model with a text tower; the baseline embedder has none (embed with a CLIP model, or use `svcluster similar`)"
_COORDINATE = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*,\s*([-+]?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Hit:
    """One place found: rank (1 = best), cosine score, where it is, its cluster and a link."""

    rank: int
    location_id: str
    score: float
    map: str | None
    lat: float | None
    lng: float | None
    pano_id: str | None
    cluster: int | None
    run: str | None
    link: str | None


@dataclass
class SearchResult:
    """A search's answer: what was asked, with which vectors, and the places found."""

    search_id: str
    kind: str  # text | location | coordinate | image
    query: str
    maps: list[str]
    model: str
    pooling: str
    precision: str
    top: int
    hits: list[Hit] = field(default_factory=list)
    note: str | None = None
    source_location_id: str | None = None  # similar by a place or a coordinate: the place used
    out: str | None = None
    exported_objects: int = 0
    method: str = "exact"  # exact | ivf (the approximate index; see ``index``)
    index: IndexUse | None = None


@dataclass(frozen=True)
class VectorSet:
    """The vectors one search ranks: every place of the chosen maps in one vector set."""

    maps: list[str]
    model: str
    pooling: str
    precision: str
    location_ids: np.ndarray
    location_maps: list[str]
    matrix: np.ndarray  # unit rows
    note: str | None = None
    fingerprint: str = ""  # names the exact embedding rows of every map (the index's key)


def street_view_link(pano_id: str | None, lat: float | None, lng: float | None) -> str | None:
    """A Google Maps link that opens Street View at the place (by pano id when it has one)."""
    if pano_id:
        return f"https://www.google.com/maps/@?api=1&map_action=pano&pano={pano_id}"
    if lat is None or lng is None:
        return None
    return f"https://www.google.com/maps/@?api=1&map_action=pano&viewpoint={lat},{lng}"


def check_top(top: int) -> int:
    if not 1 <= top <= MAX_TOP:
        raise SvclusterError(f"--top must be between 1 and {MAX_TOP}, not {top}")
    return top


def parse_coordinate(text: str) -> tuple[float, float] | None:
    """``"LAT,LNG"`` as numbers (None when ``text`` is not a coordinate); out of range is an error."""
    m = _COORDINATE.match(text)
    if not m:
        return None
    lat, lng = float(m.group(1)), float(m.group(2))
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        raise SvclusterError(f"{text!r}: latitude must be within -90..90 and longitude within -180..180")
    return lat, lng


def vector_set(
    lake: Lake, maps: list[str], model: str | None, pooling: str | None, precision: str | None, *, strict: bool = True
) -> VectorSet:
    """The vector set of ``maps``: the first map picks it as ``cluster`` would (the others must
    have it too, or are left out when not ``strict``)."""
    options = ClusterOptions(model=model, pooling=pooling, precision=precision)
    ids: list[np.ndarray] = []
    mats: list[np.ndarray] = []
    owners: list[str] = []
    used: list[str] = []
    prints: list[str] = []
    chosen = note = None
    with lake.connect() as con:
        for name in maps:
            try:
                choice, why = choose_embeddings(con, name, options)
            except SvclusterError:
                if strict:
                    raise
                continue
            if chosen is None:
                chosen, note = choice, why
                options = ClusterOptions(model=choice.model, pooling=choice.pooling, precision=choice.precision)
            vectors: Vectors = load_vectors(lake, name, chosen.model, chosen.pooling, chosen.precision, con=con)
            prints.append(f"{name}\x1f{vectors.fingerprint}")
            ids.append(vectors.location_ids)
            mats.append(vectors.matrix)
            owners += [name] * len(vectors.location_ids)
            used.append(name)
    if chosen is None:
        raise NotFoundError("no map of the lake has embeddings to search" if not maps else f"no embeddings to search in {', '.join(maps)}")
    all_ids = np.concatenate(ids)
    matrix = normalise_rows(np.concatenate(mats))
    # a place in several maps is searched once (its first map's row)
    _, first = np.unique(all_ids, return_index=True)
    first.sort()
    fingerprint = hashlib.sha256("\x1e".join(prints).encode("utf-8")).hexdigest()
    return VectorSet(
        used, chosen.model, chosen.pooling, chosen.precision, all_ids[first], [owners[i] for i in first], matrix[first], note, fingerprint
    )


def rank(matrix: np.ndarray, query: np.ndarray, top: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, scores) of the ``top`` rows of ``matrix`` nearest ``query`` by cosine, best
    first (ties by row order); rows where ``exclude`` is true are left out."""
    q = normalise_rows(np.asarray(query, np.float32).reshape(1, -1))[0]
    if q.shape[0] != matrix.shape[1]:
        raise SvclusterError(f"the query vector has {q.shape[0]} dimensions, the place embeddings {matrix.shape[1]}")
    scores = matrix @ q
    if exclude is not None:
        scores = np.where(exclude, -np.inf, scores)
    n = int(np.isfinite(scores).sum())
    k = min(top, n)
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = part[np.lexsort((part, -scores[part]))][:k]
    return order, scores[order]


def find_rows(
    lake: Lake, vs: VectorSet, query: np.ndarray, top: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, IndexUse]:
    """(rows, scores, how) of the ``top`` places of ``vs`` nearest ``query``: exact up to
    ``EXACT_MAX_ROWS`` places, else through the vector set's index (see ``rank`` for the order)."""
    if vs.matrix.shape[0] <= search_index.EXACT_MAX_ROWS:
        rows, scores = rank(vs.matrix, query, top, exclude)
        return rows, scores, IndexUse("exact")
    q = normalise_rows(np.asarray(query, np.float32).reshape(1, -1))[0]
    if q.shape[0] != vs.matrix.shape[1]:
        raise SvclusterError(f"the query vector has {q.shape[0]} dimensions, the place embeddings {vs.matrix.shape[1]}")
    # a vector set made by hand has no fingerprint: name it by its content, never share a key
    fingerprint = vs.fingerprint or hashlib.sha256(np.ascontiguousarray(vs.matrix).data).hexdigest()
    idx, source = search_index.index_for(lake, fingerprint, vs.matrix)
    rows, scores = idx.search(q, top, exclude)
    use = IndexUse("ivf", idx.key, source, idx.params.nlist, idx.params.nprobe, round(idx.build_seconds, 3))
    return rows, scores, use


def describe_hits(lake: Lake, vs: VectorSet, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
    """The hits with their coordinates, pano id, cluster in the latest run and link."""
    ids = [str(vs.location_ids[i]) for i in rows]
    single = vs.maps[0] if len(vs.maps) == 1 else None
    info = {r["location_id"]: r for r in lake.query(load_sql("search/places"), {"ids": ids, "map": single}).to_pylist()}
    hits = []
    for n, (i, lid, score) in enumerate(zip(rows, ids, scores)):
        r = info.get(lid, {})
        lat, lng, pano = r.get("lat"), r.get("lng"), r.get("pano_id")
        hits.append(
            Hit(n + 1, lid, round(float(score), 6), vs.location_maps[i], lat, lng, pano, r.get("cluster"), r.get("run"), street_view_link(pano, lat, lng))
        )
    return hits


@dataclass(frozen=True)
class SearchOptions:
    """What every search takes: how many places, which vector set (None: as ``cluster`` picks),
    the study set to write (``out``, with ``tag``; default the query) and the device for pictures."""

    top: int | None = None  # None: DEFAULT_TOP_SEARCH for text, DEFAULT_TOP_SIMILAR for examples
    model: str | None = None
    pooling: str | None = None
    precision: str | None = None
    out: str | Path | None = None
    tag: str | None = None
    device: str = "auto"


def search_text(lake: Lake, map_name: str, text: str, options: SearchOptions | None = None) -> SearchResult:
    """The places of ``map_name`` nearest the text embedding of ``text``."""
    o = options or SearchOptions()
    top = check_top(DEFAULT_TOP_SEARCH if o.top is None else o.top)
    if not text.strip():
        raise SvclusterError("the search text is empty")
    vs = vector_set(lake, [map_name], o.model, o.pooling, o.precision)
    if is_baseline(vs.model):
        raise SvclusterError(NO_TEXT_TOWER)
    features = text_features(vs.model, [text])
    if features is None:
        raise SvclusterError(f"text search needs a model with a text tower; {vs.model!r} has no usable text tower or tokenizer")
    rows, scores, use = find_rows(lake, vs, features[0], top)
    result = SearchResult(new_search_id(), "text", text, vs.maps, vs.model, vs.pooling, vs.precision, top, note=vs.note, method=use.method, index=use)
    return finish(lake, result, vs, rows, scores, o.out, o.tag if o.tag is not None else text)


def similar(
    lake: Lake,
    target: str | None = None,
    *,
    images: list[str | Path] | None = None,
    map_name: str | None = None,
    all_maps: bool = False,
    options: SearchOptions | None = None,
) -> SearchResult:
    """The places nearest a place (``target`` a location id), the place nearest a coordinate
    (``target`` "LAT,LNG") or the user's ``images``, in ``map_name`` or every map."""
    o = options or SearchOptions()
    top = check_top(DEFAULT_TOP_SIMILAR if o.top is None else o.top)
    if bool(target) == bool(images):
        raise SvclusterError("name one place (LOCATION_ID or LAT,LNG) or give --image files, not both")
    if map_name and all_maps:
        raise SvclusterError("give --map or --all-maps, not both")
    coordinate = parse_coordinate(target) if target else None
    maps = search_maps(lake, map_name, all_maps, target if target and coordinate is None else None)
    vs = vector_set(lake, maps, o.model, o.pooling, o.precision, strict=not all_maps)
    exclude = None
    source = None
    if images:
        kind, query_text = "image", ", ".join(Path(p).name for p in images)
        query = image_vector(images, vs.model, vs.pooling, vs.precision, o.device)
    else:
        if coordinate is None:
            kind, source = "location", target
        else:
            kind, source = "coordinate", nearest_place(lake, vs, *coordinate)
        query_text = target
        hit = np.flatnonzero(vs.location_ids == source)
        if not len(hit):
            raise NotFoundError(f"place {source!r} has no {vs.model} / {vs.pooling} / {vs.precision} embedding in {', '.join(vs.maps)}")
        query = vs.matrix[hit[0]]
        exclude = vs.location_ids == source
    rows, scores, use = find_rows(lake, vs, query, top, exclude)
    result = SearchResult(
        new_search_id(), kind, query_text, vs.maps, vs.model, vs.pooling, vs.precision, top, note=vs.note,
        source_location_id=source, method=use.method, index=use,
    )
    return finish(lake, result, vs, rows, scores, o.out, o.tag if o.tag is not None else f"similar {query_text}")


def search_maps(lake: Lake, map_name: str | None, all_maps: bool, location_id: str | None) -> list[str]:
    """The maps a similar request searches: the one named, every map, or the place's maps."""
    if map_name:
        return [map_name]
    if all_maps:
        maps = lake.query(load_sql("search/maps")).column("map").to_pylist()
        if not maps:
            raise NotFoundError(f"the lake at {lake.uri} holds no map")
        return maps
    if location_id:
        maps = lake.query(load_sql("search/place_maps"), {"location_id": location_id}).column("map").to_pylist()
        if not maps:
            raise NotFoundError(f"no place {location_id!r} in the lake (give a location_id of the places view)")
        return maps[:1]
    raise SvclusterError("give --map NAME or --all-maps")


def nearest_place(lake: Lake, vs: VectorSet, lat: float, lng: float) -> str:
    """The place with an embedding in ``vs`` nearest (great circle) to ``lat, lng``."""
    ids, lats, lngs = [], [], []
    for name in vs.maps:
        t = lake.query(load_sql("search/map_places"), {"map": name})
        ids += t.column("location_id").to_pylist()
        lats += t.column("lat").to_pylist()
        lngs += t.column("lng").to_pylist()
    have = np.isin(np.array(ids, dtype=object), vs.location_ids)
    if not have.any():
        raise NotFoundError(f"no place with an embedding and coordinates in {', '.join(vs.maps)}")
    la, ln = np.radians(np.array(lats, float)), np.radians(np.array(lngs, float))
    p, q = math.radians(lat), math.radians(lng)
    h = np.sin((la - p) / 2) ** 2 + np.cos(la) * math.cos(p) * np.sin((ln - q) / 2) ** 2
    h = np.where(have, h, np.inf)
    return str(ids[int(np.argmin(h))])


def image_vector(paths: list[str | Path], model: str, pooling: str, precision: str, device: str = "auto") -> np.ndarray:
    """The user's pictures as one vector of the set: the views' preprocessing and model, pooled
    as a place's views are (mean of normalised, re-normalised; or stitched into one image)."""
    embedder = load_embedder(model, device, precision)
    pictures = []
    for p in paths:
        try:
            data = Path(p).read_bytes()
        except OSError as exc:
            raise SvclusterError(f"cannot read the image {p}: {exc.strerror or exc}") from None
        pictures.append(decode_image(data, str(p)))
    if pooling == "stitched":
        batch = [embedder.prepare(pictures[0] if len(pictures) == 1 else stitch_views(pictures))]
    else:
        batch = [embedder.prepare(img) for img in pictures]
    return pool_views(embedder.embed(np.stack(batch)))


def finish(lake: Lake, result: SearchResult, vs: VectorSet, rows: np.ndarray, scores: np.ndarray, out, tag: str) -> SearchResult:
    """Describe the hits, record the search and write the study set (``out``)."""
    result.hits = describe_hits(lake, vs, rows, scores)
    record_search(lake, result)
    if out is not None:
        result.out = str(out)
        result.exported_objects = export_hits(lake, result.hits, out, tag)
    return result


def new_search_id() -> str:
    return uuid.uuid4().hex


def record_search(lake: Lake, result: SearchResult) -> None:
    """One row of ``searches``: the request and the places it found, best first. On a lake that
    cannot be written the search still answers, with a warning."""
    try:
        _append_search(lake, result)
    except LakeError as exc:
        log.warning("could not record the search in the lake (%s)", exc)


def _append_search(lake: Lake, result: SearchResult) -> None:
    lake.append(
        "searches",
        pa.Table.from_pylist(
            [
                {
                    "search_id": result.search_id,
                    "kind": result.kind,
                    "query": result.query,
                    "maps": result.maps,
                    "model": result.model,
                    "pooling": result.pooling,
                    "precision": result.precision,
                    "top": result.top,
                    "location_ids": [h.location_id for h in result.hits],
                    "scores": [h.score for h in result.hits],
                    "created_at": datetime.now(timezone.utc),
                }
            ]
        ),
    )


def check_tag(tag: str) -> str:
    if not tag.strip() or len(tag) > 200 or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in tag):
        raise SvclusterError("--tag must be 1 to 200 printable characters")
    return tag


def export_hits(lake: Lake, hits: list[Hit], out: str | Path, tag: str) -> int:
    """Write every object of the hits' places as a map file framed like the best hit's map
    (best match first, then input order), each with ``tag`` in extra.tags; returns the count."""
    check_tag(tag)
    if not hits:
        raise SvclusterError("nothing found: no study set to write")
    by_map: dict[str, list[str]] = {}
    for h in hits:
        by_map.setdefault(h.map or "", []).append(h.location_id)
    first = hits[0].map or ""
    info = lake.query(load_sql("ingest/map_envelope"), {"map": first}).to_pylist()
    if not info:
        raise NotFoundError(f"no map named {first!r} in the lake")
    head, tail = frame(info[0]["format"], info[0]["envelope"])
    objects: list[str] = []
    for name, ids in by_map.items():
        objects += lake.query(load_sql("search/objects"), {"map": name, "ids": ids, "tag": tag}).column("json").to_pylist()
    out_path = Path(out)
    try:
        with atomic_write(out_path, text=True) as fh:
            fh.write(head + "\n" + ",\n".join(objects) + "\n" + tail)
    except OSError as exc:
        raise SvclusterError(f"cannot write the study set {out_path}: {exc.strerror or exc}") from None
    return len(objects)
