"""Pure PySpark: DataFrames in, DataFrames out. Nothing below this folder imports Dagster."""
