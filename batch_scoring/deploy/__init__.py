"""Adapters for where the pipeline runs beyond local Spark: Databricks (orchestrator side and the remote task)."""
