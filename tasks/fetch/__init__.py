"""Fetch: Street View views bought per place and heading (the API client, the step, a local
stand-in server for tests and the demo, and the import of images already on disk)."""
