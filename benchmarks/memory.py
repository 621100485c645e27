"""Peak memory of this process, for the benchmarks' fresh-process memory runs.

``getrusage(...).ru_maxrss`` is the wrong number in a child process on Linux: it is kept
across ``execve``, so a child started by a parent holding 3 GB reports at least the parent's
resident set at the fork. ``VmHWM`` in ``/proc/self/status`` belongs to the child's own
address space (a new one at ``exec``), so it is used where it exists.
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    """The high-water mark of this process's resident memory, in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; bytes on macOS
