"""Transformations that build silver/gold tables (dbt models and Spark models)."""
