"""Reliability tests: crashes, API and storage faults, bad input, concurrency, secrets."""
