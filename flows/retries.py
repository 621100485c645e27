"""When a failed task is worth retrying: transient trouble yes, a user's mistake no.

An ``SvclusterError`` (a refused API key, a missing map, a bad option) fails the same way on
every attempt, so it stops the run at once with its one-line message; anything else (a worker
lost, storage hiccup, timeout) gets the retries declared on the task.
"""

from __future__ import annotations

from typing import Any

from svcluster.tasks.errors import SvclusterError


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the failure is an ``SvclusterError``."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # the result cannot be read back: treat as transient
        return True
    return not isinstance(exc, SvclusterError)
