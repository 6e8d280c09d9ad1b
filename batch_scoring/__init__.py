"""Batch scoring of a Spark MLlib predictive-maintenance model as Dagster assets.

One folder per concern: `settings` (every environment variable, default and parser), `lib/` (pure PySpark:
input tables, ingest, features, model, scoring, simulator, the Spark session), `storage/` (Delta tables,
model versions, files beside them), `defs/` (the Dagster layer: assets, resources, IO managers, jobs,
schedules, sensors, the definitions), `deploy/` (adapters for where it runs: Databricks), `cli`.
"""
