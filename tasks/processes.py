"""Helper processes svcluster starts for the length of a command (a temporary Prefect API, the
demo's scene server): they must not outlive it, and a Ctrl-C is the command's to handle.

A helper runs in a session (process group) of its own, so the SIGINT a terminal sends to its
foreground group on Ctrl-C reaches only the command: the helpers keep serving while the
command's flows record that they were interrupted, and the command stops them itself
(``stop_helpers``). On Linux a helper also gets SIGTERM when the command dies, however it
dies (``dies_with_parent``), so not even a SIGKILL leaves one behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

_HELPERS: list[subprocess.Popen] = []  # started by start_helper and not yet stopped
_HELPERS_LOCK = threading.Lock()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def dies_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: on Linux the child gets SIGTERM when its
    parent dies (even by SIGKILL), so a killed command leaves no helper behind.

    Linux ties this to the thread that started the child: start helpers from the main thread
    (or one that lives as long as they should)."""
    return _die_with_parent if sys.platform.startswith("linux") else None


def start_helper(args: Sequence[str], **popen: Any) -> subprocess.Popen:
    """Start a helper process: in its own session (a terminal's Ctrl-C does not reach it), dying
    with this process, and known to ``stop_helpers``. ``popen``: other ``Popen`` arguments."""
    process = subprocess.Popen(list(args), start_new_session=True, preexec_fn=dies_with_parent(), **popen)
    with _HELPERS_LOCK:
        _HELPERS.append(process)
    return process


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate a helper and reap it; killed if it has not ended within ``timeout`` seconds."""
    with _HELPERS_LOCK:
        if process in _HELPERS:
            _HELPERS.remove(process)
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_helpers(timeout: float = 3.0) -> None:
    """Stop every helper still running: all are asked to end at once (SIGTERM), then those
    still there after ``timeout`` seconds are killed (for an interrupted command)."""
    with _HELPERS_LOCK:
        helpers, _HELPERS[:] = list(_HELPERS), []
    for process in helpers:
        if process.poll() is None:
            try:
                process.terminate()
            except OSError:
                pass
    deadline = time.monotonic() + timeout
    for process in helpers:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
