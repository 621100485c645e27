"""What storage raises when it cannot be reached or refuses: OSError (s3fs turns S3's answers
into OSErrors), and botocore's own errors (an unreachable S3 endpoint is
``EndpointConnectionError``, not an OSError)."""

from __future__ import annotations


def _storage_errors() -> tuple[type[BaseException], ...]:
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:  # pragma: no cover - s3fs not installed
        return (OSError,)
    return (OSError, BotoCoreError)


STORAGE_ERRORS = _storage_errors()
