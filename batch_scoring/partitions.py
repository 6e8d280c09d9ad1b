"""The one daily partitioning shared by every day-based asset, so their partitions line up."""

import warnings

import dagster as dg

# Days are UTC days, like the data set's timestamps. The public data set starts in 2015.
FIRST_DAY = "2015-01-01"
DAILY_PARTITIONS = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")

# A range of days runs as one run and one Spark session, reading each input once. Dagster marks the
# `backfill_policy` parameter beta; the warning says nothing about our definitions, so it is silenced.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
SPARK_BACKFILL_POLICY = dg.BackfillPolicy.single_run()


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover the days first..last (inclusive), as a single-run backfill does."""
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }
