"""Benchmark: the Prefect pipeline against the same steps called as plain functions.

On the demo's Chile map (1000 locations; ``--quick``: 200) served by the local scene server:

1. plain   — ingest_map, fetch_map, embed_map, cluster_map, compare_with_tags, name_clusters,
             report_artifacts, export_map on a fresh lake, in this process, no Prefect;
2. prefect — the ``svcluster-pipeline`` flow on another fresh lake (thread runner, default
             batches), in a Prefect session as ``svcluster run`` opens it, after a warm-up flow
             so the temporary API's start-up is reported apart;
3. rerun   — ``svcluster run`` in a new process over the now complete lake: nothing to do, so
             this is start-up plus the lake checks (target < 15 s);

and prints the orchestration overhead (target <= 15 %) and the number of task runs.

    python benchmarks/pipeline.py [--quick] [--locations N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from svcluster.flows.prefect_env import prepare_prefect  # noqa: E402

TARGET = prepare_prefect("WARNING", start_api=True)  # as `svcluster run` does

SIZE = "224x224"


def plain_steps(map_file: Path, lake_uri: str, out: Path) -> float:
    from svcluster.tasks.cluster.step import ClusterOptions, cluster_map
    from svcluster.tasks.cluster.compare import compare_with_tags
    from svcluster.flows.demo import DEMO_MAP
    from svcluster.tasks.embed.step import EmbedOptions, embed_map
    from svcluster.tasks.export.step import export_map
    from svcluster.tasks.cluster.naming import name_clusters
    from svcluster.tasks.report.page import report_artifacts
    from svcluster.tasks.fetch.step import FetchOptions, fetch_map
    from svcluster.tasks.ingest.step import ingest_map
    from svcluster.tasks.lake.store import open_lake
    from svcluster.tasks.settings import load_settings

    started = time.perf_counter()
    lake = open_lake(lake_uri)
    ingest_map(lake, map_file, DEMO_MAP)
    fetch_map(lake, DEMO_MAP, load_settings(lake=lake_uri), FetchOptions(size=SIZE, qps=0))
    embed_map(lake, DEMO_MAP, EmbedOptions(model="baseline"))
    result = cluster_map(lake, DEMO_MAP, ClusterOptions(model="baseline", k=5))
    compare_with_tags(lake, result.runs[0].run_id)
    name_clusters(lake, result.runs[0].run_id)  # the flow also names the run and writes its report
    report_artifacts(lake, result.runs[0].run_id)
    export_map(lake, out / "plain.json", run=result.runs[0].run_id)
    return time.perf_counter() - started


def prefect_pipeline(map_file: Path, lake_uri: str, out: Path):
    from svcluster.flows.params import ClusterParams, EmbedParams, FetchParams
    from svcluster.flows.pipeline import pipeline
    from svcluster.flows.demo import DEMO_MAP

    started = time.perf_counter()
    result = pipeline(
        map_file=str(map_file), lake=lake_uri, map_name=DEMO_MAP,
        fetch=FetchParams(size=SIZE, qps=0), embed=EmbedParams(model="baseline"), cluster=ClusterParams(k=5),
        export_out=str(out / "prefect.json"), summary_out=str(out / "prefect.md"),
    )  # fmt: skip
    return time.perf_counter() - started, result


def task_runs(flow_run_id) -> Counter:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        subs = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        ids = [flow_run_id, *[s.id for s in subs]]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200)
    return Counter(r.name.rsplit("-", 1)[0] for r in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 locations instead of 1000")
    ap.add_argument("--locations", type=int, default=None)
    args = ap.parse_args()
    n = args.locations or (200 if args.quick else 1000)

    from prefect import flow

    from svcluster.flows.demo import DEMO_MAP, demo_streetview_process, write_demo_map

    work = Path(tempfile.mkdtemp(prefix="svcluster-bench-"))
    map_file = work / f"{DEMO_MAP}.json"
    write_demo_map(map_file, n)
    with demo_streetview_process(n), TARGET.session():  # as the demo serves it
        t = time.perf_counter()
        flow(name="warm-up")(lambda: None)()
        startup = time.perf_counter() - t
        plain = plain_steps(map_file, str(work / "lake-plain"), work)
        orchestrated, result = prefect_pipeline(map_file, str(work / "lake-prefect"), work)
        counts = task_runs(result.flow_run_id)
        same = (work / "plain.json").read_text() == (work / "prefect.json").read_text()

        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", "from svcluster.flows.cli import main; main()", "--lake", str(work / "lake-prefect"), "run", str(map_file),
             "--map", DEMO_MAP, "--model", "baseline", "--size", SIZE, "--qps", "0", "--k", "5",
             "--out", str(work / "rerun.json"), "--summary", str(work / "rerun.md")],
            env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        )  # fmt: skip
        rerun = time.perf_counter() - t
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return 1

    overhead = (orchestrated - plain) / plain
    print(f"pipeline benchmark: {n} demo locations, {n * 4} views at {SIZE}, baseline embedder, k=5 (work dir {work})")
    print(f"  Prefect temporary API start-up (warm-up flow, not counted): {startup:6.1f} s")
    print(f"  plain functions                                     : {plain:6.1f} s")
    print(f"  Prefect pipeline flow (5 subflows, thread runner)   : {orchestrated:6.1f} s   per step {result.seconds}")
    print(f"  orchestration overhead                              : {100 * overhead:+6.1f} %   (target <= 15 %)")
    print(f"  second run over the complete lake (new process)     : {rerun:6.1f} s   (target < 15 s)")
    print(f"  task runs: {sum(counts.values())} in total ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    print(f"  same tagged export from both: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
