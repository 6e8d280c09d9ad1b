"""The one daily partitioning shared by every day-based asset, so their partitions line up."""

import warnings

import dagster as dg

# Days are UTC days, like the data set's timestamps. The public data set starts in 2015.
FIRST_DAY = "2015-01-01"
DAILY_PARTITIONS = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")

# Dagster marks these two parameters beta; the warnings say nothing about our definitions, so they
# are silenced, by name, here where the parameters are used.
for _beta_parameter in ("backfill_policy", "allow_nonexistent_upstream_partitions"):
    warnings.filterwarnings("ignore", message=f"Parameter `{_beta_parameter}`", category=dg.BetaWarning)

# A range of days runs as one run and one Spark session, reading each input once.
SPARK_BACKFILL_POLICY = dg.BackfillPolicy.single_run()


def daily_lookback(days: int) -> dg.TimeWindowPartitionMapping:
    """Each day depends on itself and the `days - 1` days before it (none before the first day)."""
    return dg.TimeWindowPartitionMapping(start_offset=-(days - 1), allow_nonexistent_upstream_partitions=True)


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover the days first..last (inclusive), as a single-run backfill does."""
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }
