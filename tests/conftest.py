"""Shared fixtures, one plugin module per concern (each owned by the tests of that step)."""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
for _secret in ("GOOGLE_MAPS_API_KEY", "GSV_API_KEY", "GOOGLE_MAPS_SIGNING_SECRET", "SVCLUSTER_LAKE"):
    os.environ.pop(_secret, None)

pytest_plugins = [
    "tests.fixtures.lake",
    "tests.fixtures.maps",
    "tests.fixtures.streetview",
    "tests.fixtures.models",
    "tests.fixtures.prefect",
]
