"""svcluster's work: plain functions and classes, one subpackage per pipeline step and its support.

lake (all storage), ingest, fetch, embed, cluster (runs, compare, names), search, export, report,
demo; the modules at this level (errors, progress, processes, settings) are shared by every step.
Prefect wrappers and the command line live in ``svcluster.flows``.
"""
