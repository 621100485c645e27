"""Deployments: the wiring (every flow imports, prefect.yaml and docker-compose.yml parse and
point at what exists), and a real ``prefect server start`` on 127.0.0.1 (SQLite in a temporary
PREFECT_HOME) where the nightly deployment from prefect.yaml is deployed with a short interval
schedule, a process worker picks the scheduled run up, and the run completes and fills the lake."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from svcluster.flows.demo import DEMO_KEY, demo_streetview, write_demo_map
from svcluster.tasks.lake.store import open_lake

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
COMPOSE = ROOT / "deployments" / "docker-compose.yml"
FLOW_MODULES = ["svcluster.flows.ingest", "svcluster.flows.fetch", "svcluster.flows.embed", "svcluster.flows.cluster", "svcluster.flows.export", "svcluster.flows.pipeline"]


def load_entrypoint(entrypoint: str):
    path, func = entrypoint.split(":")
    assert (ROOT / path).is_file(), entrypoint
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, func)


# ---- wiring --------------------------------------------------------------------------------


def test_every_flow_imports_and_is_a_prefect_flow():
    from prefect import Flow

    names = set()
    for module in FLOW_MODULES:
        flows = [v for v in vars(importlib.import_module(module)).values() if isinstance(v, Flow)]
        assert flows, module
        names.update(f.name for f in flows)
    assert {"svcluster-ingest", "svcluster-fetch", "svcluster-embed", "svcluster-cluster", "svcluster-export", "svcluster-pipeline"} <= names


def test_prefect_yaml_references_existing_entrypoints_with_valid_parameters():
    doc = yaml.safe_load(PREFECT_YAML.read_text())
    deployments = {d["name"]: d for d in doc["deployments"]}
    assert {"svcluster-nightly", "svcluster-recluster-sweep"} <= set(deployments)
    pools = {d["work_pool"]["name"] for d in deployments.values()}
    assert pools == {"svcluster-laptop", "svcluster-docker"}
    text = PREFECT_YAML.read_text()
    assert "--type process" in text and "--type docker" in text
    for name, d in deployments.items():
        flow = load_entrypoint(d["entrypoint"])
        flow.validate_parameters(d.get("parameters") or {})  # raises on an unknown or bad parameter
        assert d["schedules"] and all("cron" in s for s in d["schedules"]), name
    assert deployments["svcluster-nightly"]["schedules"][0]["cron"] == "0 3 * * *"
    assert deployments["svcluster-recluster-sweep"]["parameters"]["params"]["ks"]


def test_docker_compose_binds_localhost_and_takes_passwords_from_the_environment():
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    assert {"postgres", "prefect-server", "worker", "svcluster"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), (name, port)
    pg = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert pg.startswith("${POSTGRES_PASSWORD:?"), "no default password"
    assert "${POSTGRES_PASSWORD}" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert services["worker"]["build"]["dockerfile"] == "Dockerfile" and (ROOT / "Dockerfile").is_file()
    assert any(v.startswith("svcluster-data:") for v in services["worker"]["volumes"])
    assert "postgresql" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]


def test_docker_pool_containers_join_compose_network_and_volume_and_reach_the_api():
    """The svcluster-docker pool's containers: on compose's network (named, not project-prefixed),
    with compose's lake volume, and PREFECT_API_URL naming a compose service on that network."""
    from urllib.parse import urlparse

    doc = yaml.safe_load(PREFECT_YAML.read_text())
    compose = yaml.safe_load(COMPOSE.read_text())
    docker = [d for d in doc["deployments"] if d["work_pool"]["name"] == "svcluster-docker"]
    assert len(docker) == 2
    network_names = {(v or {}).get("name", k) for k, v in compose["networks"].items()}
    volume_names = {(v or {}).get("name") for v in compose["volumes"].values()}
    for d in docker:
        jv = d["work_pool"]["job_variables"]
        assert jv["image"] == "{{ $SVCLUSTER_IMAGE }}"
        assert jv["networks"] and set(jv["networks"]) <= network_names, d["name"]
        assert "network_mode" not in jv  # Docker refuses network_mode together with networks
        assert {v.split(":")[0] for v in jv["volumes"]} <= volume_names, d["name"]
        api = urlparse(jv["env"]["PREFECT_API_URL"])
        assert api.hostname in compose["services"] and api.port == 4200 and api.path == "/api"
    server = compose["services"]["prefect-server"]
    assert "networks" not in server  # on the default network, the one named above
    text = PREFECT_YAML.read_text()
    assert "--all" in text and "--name svcluster-nightly --name svcluster-recluster-sweep" in text
    assert "SVCLUSTER_IMAGE" in text.split("deployments:")[0]  # the header says it must be set


# ---- a real server, a deployment, a schedule that fires -------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Stop a process this test started (and the children in its own session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)


@pytest.fixture
def prefect_server(tmp_path) -> Iterator[dict[str, str]]:
    """``prefect server start`` on 127.0.0.1 with SQLite under a temporary PREFECT_HOME; yields the
    environment that points a process at it."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env = {
        **base,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        else:
            pytest.fail("the Prefect server did not start in 120 s")
        yield {**env, "PREFECT_API_URL": api}
    finally:
        stop(server)
        log.close()


def prefect_cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_nightly_deployment_runs_on_schedule_on_a_real_server_and_changes_the_lake(prefect_server, tmp_path):
    env = prefect_server
    map_file = tmp_path / "nightly.json"
    locations = write_demo_map(map_file, 24)
    lake = tmp_path / "lake"
    params = {
        "map_file": str(map_file),
        "lake": str(lake),
        "fetch": {"size": "128x128", "qps": 0},
        "embed": {"model": "baseline"},
        "cluster": {"k": 3},
        "export_out": str(tmp_path / "out" / "nightly.tagged.json"),
        "summary_out": str(tmp_path / "out" / "nightly.summary.md"),
    }
    prefect_cli(env, "work-pool", "create", "svcluster-laptop", "--type", "process")
    # The nightly deployment exactly as prefect.yaml defines it, with a short interval schedule.
    out = prefect_cli(
        env, "--no-prompt", "deploy", "--prefect-file", str(PREFECT_YAML), "--name", "svcluster-nightly",
        "--interval", "5", "--params", json.dumps(params),
    )  # fmt: skip
    assert "svcluster-nightly" in out

    with demo_streetview(locations) as server:
        worker_env = {**env, "SVCLUSTER_STREETVIEW_URL": server.base_url, "GOOGLE_MAPS_API_KEY": DEMO_KEY,
                      "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}  # fmt: skip
        log = open(tmp_path / "worker.log", "w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "svcluster-laptop"],
            env=worker_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            state = wait_for_completed_run(env["PREFECT_API_URL"], "svcluster-nightly", timeout=240, worker=worker, log=tmp_path / "worker.log")
        finally:
            stop(worker)
            log.close()
    assert state == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
    assert server.counts["image"] > 0  # the scheduled run fetched through the real client
    runs = open_lake(str(lake)).query("SELECT map, k FROM cluster_runs").to_pylist()
    assert runs and runs[0]["map"] == "nightly" and runs[0]["k"] == 3
    assert (tmp_path / "out" / "nightly.tagged.json").is_file()


def wait_for_completed_run(api: str, deployment: str, timeout: float, worker: subprocess.Popen, log: Path) -> str:
    """Poll the server until a scheduled run of ``deployment`` completes (or one fails)."""
    deadline = time.time() + timeout
    # A server on SQLite beside a busy suite can take longer than a request's timeout to answer
    # once; the poll asks again until the deadline rather than failing on one slow answer.
    with httpx.Client(base_url=api, timeout=30) as client:
        dep = client.get(f"/deployments/name/svcluster-pipeline/{deployment}").json()
        while time.time() < deadline:
            assert worker.poll() is None, log.read_text()[-3000:]
            finished = {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}}
            try:
                runs = client.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [dep["id"]]}}, "flow_runs": finished}).json()
            except httpx.TimeoutException:
                continue
            states = {r["state_type"] for r in runs}
            assert all(r["auto_scheduled"] for r in runs)  # created by the schedule, not by hand
            if "COMPLETED" in states:
                return "COMPLETED"
            if states:
                return ",".join(sorted(states))
            time.sleep(2)
    return "TIMEOUT"


def test_compose_and_yaml_name_no_secret_values():
    for path in (PREFECT_YAML, COMPOSE):
        text = path.read_text()
        assert not re.search(r"AIza[0-9A-Za-z_-]{20,}", text)
        assert not re.search(r"(?im)^\s*\w*password:\s*[^$\s{]", text)  # every password is ${...}
