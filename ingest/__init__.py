"""Lakehouse ingestion and ELT for ML teams."""

__version__ = "0.1.0"
