"""Ingest: map files parsed and validated into ``maps`` and ``locations`` (places vs objects)."""
