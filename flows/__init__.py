"""Prefect flows (thin orchestration over ``tasks/``) and the ``svcluster`` command line."""
