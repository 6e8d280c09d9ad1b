"""The Dagster layer: assets, resources, IO managers, partitions, jobs, schedules, sensors and the definitions."""
