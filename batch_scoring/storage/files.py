"""Small files beside the tables (the crews' worklists), written wherever the warehouse is: a local folder,
or any URI Spark's Hadoop file systems write to (`abfss://`, `s3://`, `dbfs:/`, a Unity Catalog volume)."""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Callable
from datetime import date
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F


def write_text_file(spark: SparkSession, location: str, text: str) -> str:
    """Replace the file at `location` by `text` (UTF-8) as one change: readers see the old file or the new,
    never a part. Locally through a rename; on object stores one upload is already all or nothing."""
    if not urlparse(location).scheme or location.startswith("file:"):
        path = urlparse(location).path if location.startswith("file:") else os.path.abspath(location)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staging = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        with open(staging, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(staging, path)
        return path
    jvm = spark.sparkContext._jvm
    target = jvm.org.apache.hadoop.fs.Path(location)
    stream = target.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).create(target, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()
    return location


def csv_text(columns: list[str], rows: list[dict]) -> str:
    """Rows as CSV with a header line."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def write_daily_files(
    df: DataFrame,
    days: list[str],
    location_of_day: Callable[[str], str],
    render: Callable[[str, list[str], list[dict]], str],
    order_by: str,
) -> dict[str, str]:
    """Each day's rows of `df` (without the `date` column: the file is the day's) rendered as one file by
    `render(day, columns, rows)`, written even when the day has no rows, at `location_of_day(day)`. A day's rows are
    few (bounded by the fleet). Returns the files by day."""
    files = {}
    for day in days:
        of_day = df.where(F.col("date") == F.lit(date.fromisoformat(day))).drop("date")
        rows = [row.asDict(recursive=True) for row in of_day.orderBy(order_by).collect()]
        files[day] = write_text_file(df.sparkSession, location_of_day(day), render(day, of_day.columns, rows))
    return files
