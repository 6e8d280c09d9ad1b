"""Small files beside the tables (the crews' worklists), written wherever the warehouse is: a local folder,
or any URI Spark's Hadoop file systems write to (`abfss://`, `s3://`, `dbfs:/`, a Unity Catalog volume)."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlparse

from pyspark.sql import SparkSession


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
