"""Adapters for where the pipeline runs beyond local Spark: Databricks (orchestrator side and the remote task)."""

# a Pipes custom message from the Databricks task: why it stopped before the run's last asset
STOPPED_MESSAGE = "stopped"
