"""Storing what a step made, and what the stored result says of itself: the same whether the IO managers
(a run of the asset graph) or the Databricks task (the same steps on a cluster) store it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from batch_scoring.lib.crew_page import render_page
from batch_scoring.lib.model import TrainedModel
from batch_scoring.lib.steps import ROW_COUNT_KEY, Location, table_summary
from batch_scoring.storage.delta import DeltaTables
from batch_scoring.storage.files import csv_text, write_daily_files
from batch_scoring.storage.models import ModelStore


def commit_note(run_id: str, table: str) -> str:
    """What a table's Delta history says of a commit: which Dagster run wrote which asset."""
    return f"dagster run {run_id} asset {table}"


def versions_read_metadata(versions_read: dict[str, int | str]) -> dict[str, object]:
    return {"delta_versions_read": versions_read} if versions_read else {}


def store_table(
    tables: DeltaTables,
    name: str,
    rows: DataFrame,
    schema: T.StructType,
    partitions: Sequence[str] | None,
    note: str,
    versions_read: dict[str, int | str],
    counted: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """Write `rows` as table `name` (or its `partitions`) in one commit. The metadata comes from the rows
    written (steps persist what they return) rather than from reading the table back, and from what the step
    `counted` of them already; the row count also tells the write whether there are rows."""
    summary = table_summary(rows, counted)
    version = tables.write(name, rows, schema, partitions, note, row_count=summary[ROW_COUNT_KEY])
    where = {"table": tables.table_name(name)} if tables.catalog_schema else {"path": Location(tables.path(name))}
    return {**where, "delta_version": version, **versions_read_metadata(versions_read), **summary}


def store_model(
    tables: DeltaTables, name: str, model: TrainedModel, note: str, versions_read: dict[str, int | str]
) -> dict[str, object]:
    """Save a new model version; its manifest keeps the versions of the tables it learnt from."""
    path = ModelStore(tables, name).save(TrainedModel(model.pipeline, {**model.manifest, "read": versions_read}), note)
    return {"path": Location(path), **versions_read_metadata(versions_read)}


def worklist_file(tables: DeltaTables, day: str, suffix: str = "csv") -> str:
    """A day's worklist for the crews: `<warehouse>/worklists/maintenance_worklist_YYYY-MM-DD.csv` (its page:
    `.html`)."""
    return f"{tables.root.rstrip('/')}/worklists/maintenance_worklist_{day}.{suffix}"


def store_worklist_files(tables: DeltaTables, rows: DataFrame, days: list[str]) -> dict[str, str]:
    """One CSV file per day for the crews, most urgent first; the files by day."""
    return write_daily_files(
        rows, days, lambda day: worklist_file(tables, day), lambda _, columns, rows: csv_text(columns, rows), "rank"
    )


def store_crew_pages(tables: DeltaTables, rows: DataFrame, days: list[str]) -> dict[str, str]:
    """One HTML page per day for the crews, beside the day's CSV file; the files by day."""
    return write_daily_files(
        rows,
        days,
        lambda day: worklist_file(tables, day, "html"),
        lambda day, _, rows: render_page(date.fromisoformat(day), rows),
        "rank",
    )
