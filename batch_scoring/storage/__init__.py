"""Storage: Delta tables in the warehouse, versions of the trained model, and files beside them (no Dagster)."""
