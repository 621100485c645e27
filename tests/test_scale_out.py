"""Scale-out without code changes: the demo pipeline with the lake on S3 (a moto server speaking
the real S3 protocol) and with the tasks on a 2-worker Dask LocalCluster gives the same tagged
export as the local, in-process run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from svcluster.flows.params import ClusterParams, EmbedParams, FetchParams
from svcluster.flows.runner import RunnerOptions
from svcluster.flows.demo import DEMO_MAP
from tests.fixtures.prefect import make_demo_world

N = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_api):
    yield from make_demo_world(tmp_path_factory.mktemp("scale"), N)


def run(world, lake: str, out: Path, runner: RunnerOptions):
    from svcluster.flows.pipeline import pipeline

    return pipeline(
        map_file=str(world.map_file),
        lake=lake,
        map_name=DEMO_MAP,
        fetch=FetchParams(size="128x128", qps=0, batch_locations=6),
        embed=EmbedParams(model="baseline", batch_locations=6),
        cluster=ClusterParams(k=4),
        export_out=str(out / "tagged.json"),
        summary_out=str(out / "summary.md"),
        runner=runner,
    )


def tags_by_pano(path: Path) -> dict[str, list[str]]:
    doc = json.loads(path.read_text())
    return {c["extra"]["panoId"]: c["extra"].get("tags", []) for c in doc["customCoordinates"]}


@pytest.fixture(scope="module")
def local_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    result = run(world, str(out / "lake"), out, RunnerOptions())
    return result, out / "tagged.json"


def test_s3_lake_gives_the_same_export(world, local_run, s3_lake, tmp_path):
    result, local_export = local_run
    s3 = run(world, s3_lake.uri, tmp_path, RunnerOptions())
    assert s3.lake.startswith("s3://")
    assert s3_lake.table_files("images") and s3_lake.list("blobs")  # the data is in the bucket
    assert s3.cluster.run.k == result.cluster.run.k == 4
    assert tags_by_pano(tmp_path / "tagged.json") == tags_by_pano(local_export)
    assert (tmp_path / "tagged.json").read_text() == local_export.read_text()


def test_dask_local_cluster_gives_the_same_export(world, local_run, tmp_path):
    result, local_export = local_run
    dask = run(world, str(tmp_path / "lake"), tmp_path, RunnerOptions(kind="dask", dask_workers=2))
    assert dask.runner.startswith("dask (tcp://127.0.0.1:")
    assert dask.fetch.batches == 3 and dask.embed.batches == 3
    assert tags_by_pano(tmp_path / "tagged.json") == tags_by_pano(local_export)
    assert (tmp_path / "tagged.json").read_text() == local_export.read_text()
