"""Running ``svcluster`` as a real process (so it can be killed, starved or denied), and the
small pieces of infrastructure the reliability tests share: a TCP proxy that can drop an
endpoint mid-request, and size-limited / read-only folders."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from svcluster.flows.cli import main; main()"]
UNEXPECTED = "run with --debug"


@dataclass
class Finished:
    """A finished svcluster process: exit code and what it printed."""

    code: int
    out: str
    err: str
    seconds: float

    @property
    def error_line(self) -> str:
        lines = [ln for ln in self.err.strip().splitlines() if ln.startswith(("error:", "Error:"))]
        return lines[-1] if lines else ""

    def assert_clear_error(self) -> str:
        """Failed with one readable ``error:`` line, not an unexpected exception or traceback."""
        assert self.code != 0, f"expected a failure, got exit 0:\n{self.out}\n{self.err}"
        assert self.error_line, f"no error line (exit {self.code}):\n{self.err[-3000:]}"
        assert UNEXPECTED not in self.err and "Traceback" not in self.err, self.err[-3000:]
        return self.error_line


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a test process: no real credentials, Prefect quiet and local."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOOGLE_MAPS_API_KEY", "GSV_API_KEY", "GOOGLE_MAPS_SIGNING_SECRET", "SVCLUSTER_LAKE")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1")
    env.update(extra)
    return env


def start(args: list[str], env: Mapping[str, str], cwd: Path | None = None,
          preexec: Callable[[], None] | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start ``svcluster ARGS`` in its own process group (so kill -9 takes its children too).
    With ``log``, stdout and stderr go to ``log.out`` / ``log.err`` instead of pipes."""
    if log is not None:
        out, err = open(f"{log}.out", "w"), open(f"{log}.err", "w")
    else:
        out = err = subprocess.PIPE
    try:
        return subprocess.Popen(
            [*CLI, *args], env=dict(env), cwd=str(cwd or REPO), stdout=out, stderr=err,
            text=True, errors="replace", start_new_session=True, preexec_fn=preexec,
        )
    finally:
        if log is not None:
            out.close()
            err.close()


def run(args: list[str], env: Mapping[str, str], timeout: float = 300, cwd: Path | None = None,
        preexec: Callable[[], None] | None = None, log: Path | None = None) -> Finished:
    """Run ``svcluster ARGS`` to the end (killed and failed after ``timeout`` seconds)."""
    t0 = time.monotonic()
    p = start(args, env, cwd, preexec, log)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, err = p.communicate()
        if log is not None:
            err = Path(f"{log}.err").read_text(errors="replace")
        raise AssertionError(f"svcluster {args} did not finish in {timeout}s:\n{(err or '')[-3000:]}") from None
    if log is not None:
        out, err = Path(f"{log}.out").read_text(errors="replace"), Path(f"{log}.err").read_text(errors="replace")
    return Finished(p.returncode, out, err, time.monotonic() - t0)


@dataclass
class Killed:
    """A process killed with SIGKILL once ``ready`` held (or that ended first)."""

    killed: bool  # False: it finished before the kill point was reached
    seconds: float
    code: int | None


def run_and_kill(args: list[str], env: Mapping[str, str], ready: Callable[[], bool], delay: float,
                 log: Path, timeout: float = 300, poll: float = 0.005) -> Killed:
    """Start ``svcluster ARGS``; as soon as ``ready()`` is true wait ``delay`` s and kill -9 it."""
    t0 = time.monotonic()
    p = start(args, env, log=log)
    while p.poll() is None and time.monotonic() - t0 < timeout:
        if ready():
            time.sleep(delay)
            break
        time.sleep(poll)
    alive = p.poll() is None
    kill_group(p)
    return Killed(alive, time.monotonic() - t0, None if alive else p.returncode)


def kill_group(p: subprocess.Popen) -> None:
    """kill -9 the process and everything it started."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


# ---- an endpoint that goes away -----------------------------------------------------------------


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target_port`` that can go down (connections
    refused, open ones reset) and come back, or go down by itself in the middle of a PUT."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.cut_put_after: int | None = None  # bytes into a PUT request at which to go down
        self.cuts = 0
        self.cut_requests: list[str] = []  # the request line of each PUT that was cut

    def up(self) -> None:
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and reset the open ones (RST, as a vanished host does)."""
        with self._lock:
            lst, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if lst is not None:
            try:  # close() alone leaves a thread blocked in accept() still accepting (Linux)
                lst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            lst.close()
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
            except OSError:
                pass

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        in_put = 0
        request = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream and data[:5] in (b"PUT /", b"GET /", b"HEAD ", b"POST ", b"DELET"):
                    request = data.split(b"\r\n", 1)[0]
                    in_put = 1 if data.startswith(b"PUT ") else 0
                if upstream and self.cut_put_after is not None and in_put:
                    in_put += len(data)
                    if in_put > self.cut_put_after:
                        dst.sendall(data[: len(data) // 2])
                        self.cuts += 1
                        self.cut_requests.append(request.decode("latin-1"))
                        self.cut_put_after = None
                        self.down()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# ---- folders that are full or read-only ---------------------------------------------------------


def can_mount() -> bool:
    if os.geteuid() != 0 or sys.platform != "linux":
        return False
    probe = Path(f"/tmp/svcluster-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], capture_output=True)
    probe.rmdir()
    return ok


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs mounted at ``path`` for the duration (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Fill the filesystem of ``folder`` until about ``leave_bytes`` are free."""
    filler = folder / "filler.bin"
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_bytes))
    return filler


def cli(args: list[str]) -> Finished:
    """``svcluster ARGS`` in this process (the same ``main`` the script runs): cheaper than a
    process when nothing needs killing or starving."""
    import contextlib
    import io

    from svcluster.flows.cli import main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return Finished(code, out.getvalue(), err.getvalue(), time.monotonic() - t0)
