"""`svcluster run --grow`: a map that grew keeps its tags. auto assigns new places to the latest
run's centroids while they are under --grow-share of the places, and re-clusters beyond it
(issue 18.4); assign and recluster force one way; a k sweep is always clustered."""

from __future__ import annotations

import numpy as np
import pytest

from svcluster.tasks.cluster.grow import cluster_or_assign
from svcluster.tasks.cluster.step import ClusterOptions
from svcluster.tasks.errors import SvclusterError
from tests.cluster_data import append_embeddings, ingest_objects

DIM = 8


def objs(n):
    return [{"lat": -30.0 - i * 0.05, "lng": -70.0, "heading": 0} for i in range(n)]


def vectors(n, seed):
    """Two well-separated groups, alternating."""
    rng = np.random.default_rng(seed)
    e = np.eye(DIM, dtype=np.float32)
    v = np.stack([e[i % 2] + 0.1 * rng.standard_normal(DIM) for i in range(n)])
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def grow_to(lake, tmp_path, n, have):
    """Re-ingest the map with ``n`` places; embed the ones added since ``have``."""
    ids = ingest_objects(lake, tmp_path, objs(n), "g")
    append_embeddings(lake, ids[have:], vectors(n, seed=n)[have:])
    return ids


def run_row(lake, run_id):
    return lake.query("SELECT name, method, parent_run_id FROM cluster_runs WHERE run_id = ?", [run_id]).to_pylist()[0]


def labels(lake, run_id):
    rows = lake.query("SELECT location_id, cluster FROM cluster_assignments WHERE run_id = ?", [run_id]).to_pylist()
    return {r["location_id"]: r["cluster"] for r in rows}


AUTO = ClusterOptions(k=2, grow="auto", grow_share=0.2, silhouette_sample=0)


def test_auto_assigns_under_the_share_and_reclusters_beyond_it(lake, tmp_path):
    grow_to(lake, tmp_path, 40, 0)
    first = cluster_or_assign(lake, "g", AUTO)
    v1 = first.run
    assert run_row(lake, v1.run_id)["name"] == "g@v1" and "no earlier run" in first.grow_note

    grow_to(lake, tmp_path, 46, 40)  # 6 new of 46: 13 % < 20 %
    assigned = cluster_or_assign(lake, "g", AUTO)
    row = run_row(lake, assigned.run.run_id)
    assert row == {"name": "g@v2", "method": "assign", "parent_run_id": v1.run_id}
    assert "6 new places (13.0 % of 46)" in assigned.grow_note and "assigned to the centroids of g@v1" in assigned.grow_note
    before, after = labels(lake, v1.run_id), labels(lake, assigned.run.run_id)
    assert {k: after[k] for k in before} == before and len(after) == 46  # old tags unchanged
    assert assigned.n_locations == 46 and assigned.map_locations == 46

    grow_to(lake, tmp_path, 70, 46)  # 24 new of 70 against v2: 34 % >= 20 %
    reclustered = cluster_or_assign(lake, "g", AUTO)
    row = run_row(lake, reclustered.run.run_id)
    assert row["name"] == "g@v3" and row["method"] in (None, "cluster") and row["parent_run_id"] is None
    assert "not under --grow-share 20 %: re-clustered" in reclustered.grow_note

    # Nothing new since v3: clustered again, which reuses v3.
    again = cluster_or_assign(lake, "g", AUTO)
    assert again.run.reused and again.run.run_id == reclustered.run.run_id and "no place is new" in again.grow_note


def test_assign_and_recluster_force_one_way_and_a_sweep_is_clustered(lake, tmp_path):
    grow_to(lake, tmp_path, 20, 0)
    v1 = cluster_or_assign(lake, "g", ClusterOptions(k=2, silhouette_sample=0)).run
    grow_to(lake, tmp_path, 40, 20)  # half the places are new
    forced = cluster_or_assign(lake, "g", ClusterOptions(k=2, grow="assign", silhouette_sample=0))
    assert run_row(lake, forced.run.run_id)["method"] == "assign" and "--grow assign" in forced.grow_note
    assert run_row(lake, forced.run.run_id)["parent_run_id"] == v1.run_id
    plain = cluster_or_assign(lake, "g", ClusterOptions(k=2, seed=7, silhouette_sample=0))  # recluster: as `cluster`
    assert plain.grow_note is None and run_row(lake, plain.run.run_id)["method"] in (None, "cluster")
    sweep = cluster_or_assign(lake, "g", ClusterOptions(k=2, ks=[2, 3], grow="auto", silhouette_sample=0))
    assert len(sweep.runs) == 2 and sweep.grow_note == "a k sweep is always clustered"


@pytest.mark.parametrize("bad,match", [({"grow": "grow"}, "--grow must be one of"), ({"grow_share": 1.5}, "--grow-share")])
def test_bad_grow_options_are_refused(bad, match):
    with pytest.raises(SvclusterError, match=match):
        ClusterOptions(**bad).checked()


def test_the_cluster_flow_takes_grow_and_says_what_it_did(prefect_api, lake, tmp_path):
    """The pipeline's cluster flow (what `svcluster run` and the nightly deployment run) passes
    grow on and its summary says which way it went."""
    from svcluster.flows.cluster import cluster_flow
    from svcluster.flows.params import ClusterParams

    grow_to(lake, tmp_path, 40, 0)
    params = ClusterParams(k=2, grow="auto", report=False)
    cluster_flow("g", lake.uri, params)
    grow_to(lake, tmp_path, 44, 40)
    grown = cluster_flow("g", lake.uri, params)
    assert grown.run.name == "g@v2" and "- grown map: 4 new places (9.1 % of 44), under --grow-share 20 %" in grown.summary_markdown
