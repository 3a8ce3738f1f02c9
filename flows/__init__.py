"""Prefect flows: thin wrappers that call the same functions as the `ingest` CLI."""
