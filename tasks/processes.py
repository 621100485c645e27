"""Helper processes svcluster starts for the length of a command (a temporary Prefect API, the
demo's scene server): they must not outlive it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def dies_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: on Linux the child gets SIGTERM when its
    parent dies (even by SIGKILL), so a killed command leaves no helper behind."""
    return _die_with_parent if sys.platform.startswith("linux") else None


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate a helper and reap it; killed if it has not ended within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
