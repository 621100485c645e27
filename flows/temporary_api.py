"""A Prefect API for one command, started the moment the command starts.

Prefect's own ephemeral mode starts the same server (``uvicorn`` on Prefect's ``create_app``
factory, UI off, on 127.0.0.1) lazily: at the first flow call, after the client process has
imported the whole server application too only to launch it, and then waits for it to boot
(figures: docs/scaling.md, 'Figures'). Launching it ourselves as the command begins lets that start-up overlap with
loading svcluster's own libraries, and the client never imports the server. The database is
Prefect's default (``PREFECT_HOME``), so flow run history is the same as in ephemeral mode.

The server's output goes to a log file that is shown only if it fails to start; it is
stopped when the command exits (and dies with it: on Linux it gets SIGTERM when its parent
goes away, so a killed command leaves no server behind). It runs in a process group of its
own (``svcluster.tasks.processes.start_helper``): a Ctrl-C in the terminal interrupts the command, not
the server, so the flows can still record the interruption before the command stops it.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.processes import start_helper, stop_process

# The server needs none of svcluster's secrets: they are not passed to it.
SECRET_VARIABLES = ("GOOGLE_MAPS_API_KEY", "GSV_API_KEY", "GOOGLE_MAPS_SIGNING_SECRET", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
STARTUP_FAILURE_EXIT = 3  # uvicorn's exit code when the port is taken (or the app's start-up failed)
PORT_ATTEMPTS = 3
DEFAULT_START_TIMEOUT = 180.0  # the first start on a machine creates the database (migrations)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryApi:
    """A Prefect server subprocess on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="svcluster-prefect-api-", suffix=".log", delete=False)
        self._ready = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def launch(cls) -> "TemporaryApi":
        """Start the server process and return at once (``wait_ready`` waits for it)."""
        api = cls()
        api._spawn()
        atexit.register(api.stop)
        return api

    def _spawn(self) -> None:
        spec = importlib.util.find_spec("prefect")
        if spec is None or not spec.origin:
            raise SvclusterError("Prefect is not installed: pip install -e . installs it")
        app_dir = str(Path(spec.origin).parent.parent)
        self.port = free_port()
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",  # the services Prefect runs for its ephemeral server
            "PREFECT__SERVER_FINAL": "1",
        }
        for name in ("PREFECT_API_URL", *SECRET_VARIABLES):
            env.pop(name, None)
        self.process = start_helper(
            [sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory", "prefect.server.api.server:create_app",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the server answers its health check (idempotent)."""
        if self._ready:
            return
        limit = timeout or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or DEFAULT_START_TIMEOUT)
        deadline = time.monotonic() + limit
        attempts = 1
        while time.monotonic() < deadline:
            code = self.process.poll() if self.process else None
            if code == STARTUP_FAILURE_EXIT and attempts < PORT_ATTEMPTS:
                # most likely another process took the port between our check and its bind
                attempts += 1
                self._spawn()
                continue
            if code is not None:
                raise SvclusterError(f"the temporary Prefect API exited with code {code} while starting:\n{self._log_tail()}")
            if self._healthy():
                self._ready = True
                return
            time.sleep(0.05)
        self.stop()
        raise SvclusterError(
            f"the temporary Prefect API did not start within {limit:.0f} s "
            f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS raises the limit):\n{self._log_tail()}"
        )

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """Stop the server and remove its log (idempotent)."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)
