"""The temporary Prefect API that `svcluster run`/`demo` start at once: a real Prefect server
process on 127.0.0.1 that answers, gets none of svcluster's secrets, stops with the command,
and dies with it when the command is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from svcluster.flows.temporary_api import SECRET_VARIABLES, TemporaryApi

REPO = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\tZ" in status.read_text().split("State:")[1].splitlines()[0])


def wait_gone(pid: int, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def prefect_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return tmp_path / "prefect-home"


def test_it_serves_prefect_without_our_secrets_then_stops(prefect_home, monkeypatch):
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", "AIzaTEMPORARYapiKEYnotPASSED")
    monkeypatch.setenv("GOOGLE_MAPS_SIGNING_SECRET", "c2VjcmV0LW5vdC1wYXNzZWQ=")
    api = TemporaryApi.launch()
    try:
        api.wait_ready(timeout=180)
        with urllib.request.urlopen(f"{api.api_url}/health", timeout=10) as r:
            assert r.status == 200 and json.loads(r.read()) is True
        with urllib.request.urlopen(f"{api.api_url}/admin/version", timeout=10) as r:
            assert json.loads(r.read())  # Prefect's API answers, not just a port
        environ = Path(f"/proc/{api.process.pid}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0].decode() for e in environ if e}
        assert not names & set(SECRET_VARIABLES)
        assert b"AIzaTEMPORARYapiKEYnotPASSED" not in b"\0".join(environ)
        assert (prefect_home / "prefect.db").exists()  # Prefect's own database under PREFECT_HOME
        pid = api.process.pid
    finally:
        api.stop()
    assert wait_gone(pid)
    api.stop()  # idempotent


def test_a_killed_command_leaves_no_server_behind(prefect_home):
    script = textwrap.dedent(
        """
        import sys, time
        from svcluster.flows.temporary_api import TemporaryApi
        api = TemporaryApi.launch()
        print(api.process.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(parent.stdout.readline())
        assert alive(server_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert wait_gone(server_pid), "the temporary API outlived its killed command"


def test_a_server_that_cannot_start_is_a_clear_error(prefect_home, monkeypatch):
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "NOT-A-LEVEL")  # Prefect refuses its settings at import
    from svcluster.tasks.errors import SvclusterError

    api = TemporaryApi.launch()
    with pytest.raises(SvclusterError, match=r"temporary Prefect API exited with code 1 while starting:\n.*prefect"):
        api.wait_ready(timeout=120)
    api.stop()


def test_flows_on_a_temporary_api_send_no_heartbeats_but_a_server_gets_them():
    from prefect.settings import get_current_settings

    from svcluster.flows.prefect_env import PrefectTarget

    with PrefectTarget(None).session():
        assert get_current_settings().flows.heartbeat_frequency is None
    with PrefectTarget("http://prefect.internal:4200/api").session():
        assert get_current_settings().flows.heartbeat_frequency is not None
    assert get_current_settings().flows.heartbeat_frequency is not None
