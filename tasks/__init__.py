"""svcluster's work: plain functions and classes, each module owning one concern.

locations (map formats), lake (all storage), streetview (API client), images, embed,
cluster, compare, export, report. Prefect wrappers live in ``flows/``.
"""
