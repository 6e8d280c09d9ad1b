"""The one daily partitioning shared by every day-based asset, so their partitions line up."""

import dagster as dg

# Days are UTC days, like the data set's timestamps. The public data set starts in 2015.
FIRST_DAY = "2015-01-01"
DAILY_PARTITIONS = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")
