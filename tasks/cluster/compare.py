"""Comparing clusterings: two runs with each other, or a run with the map's own tags.

The numbers come from the SQL macros of ``sql/cluster/clusters.sql`` (``cluster_pairs``,
``cluster_contingency``, ``cluster_movers``, ``cluster_tag_pairs``); this module adds the
scores scikit-learn computes from the same pairs: adjusted Rand index (ARI; 1 = the same
partition, about 0 = no better than chance) and normalised mutual information (NMI; 1 = the
same, 0 = independent).

Tags as human categories: each distinct tag of a location is one (location, tag) pair, so a
location tagged ``desert`` and ``coast`` counts once under each; every number of a tag
comparison (ARI, NMI, contingency, purity) is over those pairs. Tags that svcluster itself
exported (the lake records every one, ``exported_tags``) are ignored, and so are locations
without a tag (counted in ``only_a``); every other tag is the user's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svcluster.sql import load_sql
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.links import street_view_url
from svcluster.tasks.cluster.runs import resolve_run

MOVERS_SHOWN = 20


@dataclass(frozen=True)
class ContingencyCell:
    """How many locations (or location-tag pairs) cluster ``a`` and category ``b`` share."""

    a: int
    b: str  # a cluster number of the other run, or a tag
    locations: int


@dataclass(frozen=True)
class Purity:
    """One category and its dominant counterpart: the share of it that one counterpart holds.

    For clusters of A: the B cluster (or tag) most of it went to. For categories of B (the
    ``spread`` list): the A cluster holding most of it.
    """

    category: str
    size: int
    dominant: str
    dominant_locations: int
    purity: float


@dataclass(frozen=True)
class Mover:
    """A location whose cluster number differs between the two runs, where it is, and a link
    that opens it in Street View (its panorama when the map names one)."""

    location_id: str
    cluster_a: int
    cluster_b: int
    lat: float | None
    lng: float | None
    region_code: str | None
    pano_id: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Comparison:
    """Two clusterings of the same locations, side by side."""

    a: str  # MAP@vN of run A
    b: str  # MAP@vN of run B, or "tags"
    run_a: str
    run_b: str | None
    compared: int  # locations both have (for tags: location-tag pairs)
    only_a: int  # locations only A assigned (for tags: A's locations without a human tag)
    only_b: int | None  # None for tags
    ari: float
    nmi: float
    changed: int | None  # locations whose cluster number (and so exported tag) differs
    unmatched: int | None  # locations outside the best one-to-one matching of clusters
    contingency: list[ContingencyCell]
    purity: list[Purity]  # per cluster of A
    spread: list[Purity]  # per cluster / tag of B
    movers: list[Mover]  # the first MOVERS_SHOWN movers (`cluster_movers` in SQL has them all)
    ignored_tag_pattern: str | None = None


def purity_rows(a: np.ndarray, b: np.ndarray, a_names: list[str], b_names: list[str]) -> tuple[list[Purity], list[Purity]]:
    """Per A category its dominant B category's share, and per B category its dominant A's."""
    table = np.zeros((len(a_names), len(b_names)), dtype=np.int64)
    np.add.at(table, (a, b), 1)

    def rows(t: np.ndarray, names: list[str], other: list[str]) -> list[Purity]:
        out = []
        for i, name in enumerate(names):
            size = int(t[i].sum())
            if size == 0:
                continue
            j = int(np.argmax(t[i]))
            out.append(Purity(name, size, other[j], int(t[i, j]), float(t[i, j] / size)))
        return out

    return rows(table, a_names, b_names), rows(table.T, b_names, a_names)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(ARI, NMI) of two labelings of the same locations (scikit-learn, imported on first use:
    the CLI's start-up should not pay for it)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return float(adjusted_rand_score(a, b)), float(normalized_mutual_info_score(a, b))


def cluster_names_of(labels: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    """The categories of a run's labels (0..k-1, and -1 when HDBSCAN left noise) and each
    label's index among them: noise is a category like any cluster, never a negative index."""
    numbers = sorted(set(range(k)) | set(np.unique(labels).tolist()))
    return [str(c) for c in numbers], np.searchsorted(np.asarray(numbers, np.int64), labels)


def unmatched_count(a: np.ndarray, b: np.ndarray) -> int:
    """Locations off the maximum-overlap one-to-one matching of A's clusters to B's (labels
    may hold -1, HDBSCAN's noise, which is matched like a cluster)."""
    from scipy.optimize import linear_sum_assignment

    a, b = np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    table = np.bincount(a * kb + b, minlength=ka * kb).reshape(ka, kb)
    r, c = linear_sum_assignment(table, maximize=True)
    return int(len(a) - table[r, c].sum())


def run_row(lake: Lake, run_id: str) -> dict:
    return lake.query(load_sql("cluster/run_row"), {"run_id": run_id}).to_pylist()[0]


def compare_runs(lake: Lake, run_a: str, run_b: str) -> Comparison:
    """Run A against run B (each a run_id, a unique prefix, or MAP@vN) over their shared locations."""
    ra, rb = resolve_run(lake, run_a), resolve_run(lake, run_b)
    pairs = lake.query(load_sql("cluster/compare_pairs"), {"a": ra.run_id, "b": rb.run_id})
    if pairs.num_rows == 0:
        raise SvclusterError(f"{ra.name} and {rb.name} have no location in common")
    a = pairs.column("cluster_a").to_numpy().astype(np.int64)
    b = pairs.column("cluster_b").to_numpy().astype(np.int64)
    cells = lake.query(load_sql("cluster/compare_contingency"), {"a": ra.run_id, "b": rb.run_id}).to_pylist()
    movers = lake.query(load_sql("cluster/compare_movers"), {"a": ra.run_id, "b": rb.run_id, "limit": MOVERS_SHOWN}).to_pylist()
    names_a, index_a = cluster_names_of(a, ra.k)
    names_b, index_b = cluster_names_of(b, rb.k)
    purity, spread = purity_rows(index_a, index_b, names_a, names_b)
    n = len(a)
    ari, nmi = agreement(a, b)
    return Comparison(
        a=ra.name,
        b=rb.name,
        run_a=ra.run_id,
        run_b=rb.run_id,
        compared=n,
        only_a=int(run_row(lake, ra.run_id)["n_locations"]) - n,
        only_b=int(run_row(lake, rb.run_id)["n_locations"]) - n,
        ari=ari,
        nmi=nmi,
        changed=int((a != b).sum()),
        unmatched=unmatched_count(a, b),
        contingency=[ContingencyCell(c["cluster_a"], str(c["cluster_b"]), c["locations"]) for c in cells],
        purity=purity,
        spread=spread,
        movers=[Mover(**m, url=street_view_url(m["lat"], m["lng"], m["pano_id"])) for m in movers],
    )


def compare_with_tags(lake: Lake, run: str, ignore_pattern: str | None = None) -> Comparison:
    """Run against the tags already in its map, each tag a human category (see module doc);
    ``ignore_pattern`` leaves out more tags (a regular expression)."""
    ref = resolve_run(lake, run)
    ignore = ignore_pattern
    params = {"run": ref.run_id, "ignore": ignore}
    pairs = lake.query(load_sql("cluster/compare_tag_pairs"), params)
    coverage = lake.query(load_sql("cluster/compare_tag_coverage"), params).to_pylist()[0]
    if pairs.num_rows == 0:
        raise SvclusterError(f"no location of {ref.name} carries a tag of its own to compare with (map {ref.map!r})")
    clusters = pairs.column("cluster").to_numpy().astype(np.int64)
    tags = np.asarray(pairs.column("tag").to_pylist(), dtype=object)
    tag_names, tag_index = np.unique(tags, return_inverse=True)
    cells = lake.query(load_sql("cluster/compare_tag_contingency"), params).to_pylist()
    names_a, index_a = cluster_names_of(clusters, ref.k)
    purity, spread = purity_rows(index_a, tag_index, names_a, [str(t) for t in tag_names])
    ari, nmi = agreement(tag_index, clusters)
    return Comparison(
        a=ref.name,
        b="tags",
        run_a=ref.run_id,
        run_b=None,
        compared=len(clusters),
        only_a=int(coverage["assigned"] - coverage["tagged"]),
        only_b=None,
        ari=ari,
        nmi=nmi,
        changed=None,
        unmatched=None,
        contingency=[ContingencyCell(c["cluster"], c["tag"], c["locations"]) for c in cells],
        purity=purity,
        spread=spread,
        movers=[],
        ignored_tag_pattern=ignore,
    )
