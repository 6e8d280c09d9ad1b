"""The one daily partitioning shared by every day-based asset, so their partitions line up."""

import warnings
from datetime import date, timedelta

import dagster as dg

from batch_scoring import settings

# Days are UTC days, like the data set's timestamps, from BATCH_SCORING_FIRST_DAY (read when the code loads).
FIRST_DAY = settings.first_day()
DAILY_PARTITIONS = dg.DailyPartitionsDefinition(start_date=FIRST_DAY.isoformat(), timezone="UTC")

# Dagster marks these two parameters beta; the warnings say nothing about our definitions, so they
# are silenced, by name, here where the parameters are used.
for _beta_parameter in ("backfill_policy", "allow_nonexistent_upstream_partitions", "data_version"):
    warnings.filterwarnings("ignore", message=f"Parameter `{_beta_parameter}`", category=dg.BetaWarning)


def calendar() -> tuple[date, date]:
    """The daily partitions as days [first, end): from FIRST_DAY to the last complete UTC day."""
    last = DAILY_PARTITIONS.get_last_partition_key()
    return FIRST_DAY, date.fromisoformat(last) + timedelta(days=1)


# A range of days runs as one run and one Spark session, reading each input once.
SPARK_BACKFILL_POLICY = dg.BackfillPolicy.single_run()


# An input's metadata: what a missing day of its declared lookback means (read by the IO manager)
MISSING_DAYS_KEY = "batch_scoring/missing_days"


class MissingDays:
    """What a day missing from a declared lookback means (plain strings: they are stored in the job's snapshot)."""

    FAIL = "fail"  # a day missing after the table's first day fails the step, naming it
    ALLOWED = "allowed"  # the asset reads what is there and says which days it had
    QUIET = "quiet"  # an event log: a day without rows is a day without events, nothing to check


def lookback(days: int, *, key: str | None = None, days_before: int = 0, missing: str) -> dg.AssetIn:
    """An input of the `days` days up to each partition's own day, or up to `days_before` days before it (1: a
    self-dependency's earlier days), none before the first day."""
    end = -days_before
    return dg.AssetIn(
        key=key,
        partition_mapping=dg.TimeWindowPartitionMapping(
            start_offset=end - (days - 1), end_offset=end, allow_nonexistent_upstream_partitions=True
        ),
        metadata={MISSING_DAYS_KEY: missing},
    )


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover the days first..last (inclusive), as a single-run backfill does."""
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }
