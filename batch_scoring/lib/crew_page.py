"""The crews' page of a day: the worklist with what a crew asks before driving out (how sure, by when, how long
the machine has been on the list, when that part was last changed, which sensor looks wrong, where the probability
has been going). Spark gathers a page's rows, one per listed machine; plain Python renders them as one
self-contained HTML file (no scripts, fonts or images from elsewhere: it opens from a share or a mail)."""

from __future__ import annotations

import html
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from batch_scoring.lib.columns import SENSOR_SYMBOLS
from batch_scoring.lib.features import HORIZON_HOURS, MAX_DAYS_SINCE_REPLACEMENT, REPLACEMENT_FEATURES, sensor_feature
from batch_scoring.lib.tables import COMPONENTS, SENSORS

HISTORY_DAYS = 14  # the probability's trail and the days-on-the-list count reach back this far, the day included
BASELINE_DAYS = 30  # a machine's own baseline: its daily 24 h sensor means over the days before
MIN_BASELINE_DAYS = 7  # fewer earlier days than this make no baseline to compare with
URGENT_PROBABILITY = 0.8  # from this failure probability the page shows the figure in red


def _day_number(column: str = "date") -> Column:
    """Days since 1970-01-01: an order that range windows can count days in."""
    return F.datediff(F.col(column), F.lit(date(1970, 1, 1)))


def days_on_list(worklist: DataFrame) -> DataFrame:
    """(machine_id, date, days_on_list) for each listed machine-day: the days in a row it has been listed, counted
    up to HISTORY_DAYS (so a day's count does not depend on how many days its run read). Consecutive days share
    `date - row number`, so each run of days is one group (no self-join)."""
    by_day = Window.partitionBy("machine_id").orderBy("date")
    in_a_row = worklist.select("machine_id", "date").withColumn(
        "streak", F.date_sub("date", F.row_number().over(by_day))
    )
    count = F.row_number().over(Window.partitionBy("machine_id", "streak").orderBy("date"))
    return in_a_row.select("machine_id", "date", F.least(count, F.lit(HISTORY_DAYS)).alias("days_on_list"))


def probability_history(predictions: DataFrame) -> DataFrame:
    """(machine_id, date, history): each day's failure probabilities of the HISTORY_DAYS days up to it, by date."""
    trailing = Window.partitionBy("machine_id").orderBy(_day_number()).rangeBetween(-(HISTORY_DAYS - 1), 0)
    points = F.collect_list(F.struct("date", "failure_probability")).over(trailing)
    return predictions.select("machine_id", "date", F.array_sort(points).alias("history"))


def sensor_off_baseline(features: DataFrame) -> DataFrame:
    """(machine_id, date, off_baseline): the sensor whose 24 h mean lies furthest from the machine's own mean over
    the BASELINE_DAYS days before, in the machine's standard deviations; null without MIN_BASELINE_DAYS to compare.
    Each window statistic is a column of its own before anything uses it: written inline, Spark evaluated every
    use as a window of its own (72 sliding windows instead of 12, 7 s instead of 0.5 s for a month of 30 machines)."""
    before = Window.partitionBy("machine_id").orderBy(_day_number()).rangeBetween(-BASELINE_DAYS, -1)
    statistics = []
    for sensor in SENSORS:
        reading = F.col(sensor_feature(sensor, "mean", 24))
        statistics += [
            reading.alias(f"{sensor}_reading"),
            F.avg(reading).over(before).alias(f"{sensor}_usual"),
            F.stddev_samp(reading).over(before).alias(f"{sensor}_spread"),
            F.count(reading).over(before).alias(f"{sensor}_days"),
        ]
    candidates = []
    for sensor in SENSORS:
        reading, usual, spread, days = (F.col(f"{sensor}_{name}") for name in ("reading", "usual", "spread", "days"))
        deviation = F.when((days >= MIN_BASELINE_DAYS) & (spread > 0), (reading - usual) / spread)
        candidates.append(
            F.struct(
                F.abs(deviation).alias("size"),
                F.lit(sensor).alias("sensor"),
                reading.alias("reading"),
                usual.alias("usual"),
                deviation.alias("deviation"),
            )
        )
    furthest = features.select("machine_id", "date", *statistics).select(
        "machine_id",
        "date",
        F.array_max(F.array(*candidates)).alias("furthest"),  # by size first; null sorts lowest
    )
    return furthest.select(
        "machine_id", "date", F.when(F.col("furthest.size").isNotNull(), F.col("furthest")).alias("off_baseline")
    )


def _last_replaced(component: Column) -> Column:
    """The day `component` was last replaced before the observation, from the day's features; null when not in the
    last MAX_DAYS_SINCE_REPLACEMENT days."""
    days_since = F.coalesce(*[F.when(component == c, F.col(name)) for c, name in zip(COMPONENTS, REPLACEMENT_FEATURES)])
    replaced_at = F.timestamp_seconds(F.col("observed_at").cast("long") - F.round(days_since * 86400).cast("long"))
    return F.when(days_since < MAX_DAYS_SINCE_REPLACEMENT, F.to_date(replaced_at))


def page_rows(worklist: DataFrame, predictions: DataFrame, features: DataFrame, days: list[date]) -> DataFrame:
    """One row per machine listed on `days`, with what its page shows. `worklist` and `predictions` reach
    HISTORY_DAYS - 1 days before the first day, `features` BASELINE_DAYS; days missing there shorten the history."""
    on_days = F.col("date").isin(days)
    listed = worklist.where(on_days)
    day_features = features.select("machine_id", "date", "model", "age", *REPLACEMENT_FEATURES)
    return (
        listed.join(days_on_list(worklist).where(on_days), ["machine_id", "date"])
        .join(probability_history(predictions).where(on_days), ["machine_id", "date"], "left")
        .join(sensor_off_baseline(features).where(on_days), ["machine_id", "date"], "left")
        .join(day_features.where(on_days), ["machine_id", "date"], "left")
        .select(
            "rank",
            "machine_id",
            "likely_component",
            "failure_probability",
            "component_probability",
            F.to_date(F.col("observed_at") + F.expr(f"INTERVAL {HORIZON_HOURS} HOURS")).alias("act_before"),
            "days_on_list",
            _last_replaced(F.col("likely_component")).alias("last_replaced"),
            "model",
            "age",
            "off_baseline",
            F.coalesce("history", F.array()).alias("history"),
            "observed_at",
            "model_version",
            "date",
        )
    )


# ---- the page (plain Python: a day's rows, collected, are bounded by the fleet)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1f2933; }
h1 { font-size: 22px; margin: 0 0 4px; }
p.lead { margin: 0 0 16px; color: #52606d; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th { text-align: left; background: #f0f4f8; border-bottom: 2px solid #bcccdc; padding: 6px 8px; }
td { border-bottom: 1px solid #d9e2ec; padding: 6px 8px; vertical-align: middle; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
td.day { white-space: nowrap; }
.urgent { color: #b42318; font-weight: 600; }
.quiet { color: #7b8794; }
footer { margin-top: 16px; font-size: 12px; color: #7b8794; }
@media print { body { margin: 0; } }
"""

SPARK_WIDTH, SPARK_HEIGHT, SPARK_PAD = 14 * 12, 36, 4


def _percent(probability: float) -> str:
    return f"{probability * 100:.0f}%"


def sparkline(day: date, history: list[dict]) -> str:
    """An inline SVG of the failure probability over the HISTORY_DAYS days up to `day` (0 at the bottom, 100% at the
    top, a dashed line at 50%); a day without a prediction leaves a gap."""
    step = SPARK_WIDTH / HISTORY_DAYS

    def point(entry: dict) -> tuple[float, float]:
        slot = HISTORY_DAYS - 1 - (day - entry["date"]).days
        y = SPARK_PAD + (1 - entry["failure_probability"]) * (SPARK_HEIGHT - 2 * SPARK_PAD)
        return round(slot * step + step / 2, 1), round(y, 1)

    runs: list[list[tuple[float, float]]] = []
    previous = None
    for entry in history:
        if previous is None or (entry["date"] - previous).days > 1:
            runs.append([])
        runs[-1].append(point(entry))
        previous = entry["date"]
    mid = SPARK_HEIGHT / 2
    shapes = [f'<line x1="0" y1="{mid}" x2="{SPARK_WIDTH}" y2="{mid}" stroke="#bcccdc" stroke-dasharray="3,3"/>']
    for run in runs:
        coordinates = " ".join(f"{x},{y}" for x, y in run)
        shapes.append(f'<polyline points="{coordinates}" fill="none" stroke="#2d6cdf" stroke-width="1.5"/>')
        shapes += [f'<circle cx="{x}" cy="{y}" r="1.8" fill="#2d6cdf"/>' for x, y in run]
    if history and history[-1]["date"] == day:
        x, y = point(history[-1])
        shapes.append(f'<circle cx="{x}" cy="{y}" r="3" fill="#b42318"/>')
    said = ", ".join(f"{e['date']:%m-%d} {_percent(e['failure_probability'])}" for e in history) or "no predictions"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" '
        f'viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" role="img"><title>Failure probability: {said}</title>'
        f'<rect width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" fill="#f8fafc"/>{"".join(shapes)}</svg>'
    )


def _off_baseline_text(off: dict | None) -> str:
    if off is None:
        return '<span class="quiet">not enough history</span>'
    unit = SENSOR_SYMBOLS[off["sensor"]]
    return (
        f"{html.escape(off['sensor'])} {off['reading']:.1f}{unit} "
        f'<span class="quiet">(usual {off["usual"]:.1f}{unit}, {off["deviation"]:+.1f} sd)</span>'
    )


def _days_on_list_text(days: int) -> str:
    return f"{days}+ days" if days >= HISTORY_DAYS else ("1 day" if days == 1 else f"{days} days")


def _row_html(day: date, row: dict) -> str:
    replaced = row["last_replaced"].isoformat() if row["last_replaced"] else "not in the last year"
    urgent = ' class="number urgent"' if row["failure_probability"] >= URGENT_PROBABILITY else ' class="number"'
    cells = [
        f'<td class="number">{row["rank"]}</td>',
        f'<td class="number">{row["machine_id"]}</td>',
        f"<td>{html.escape(row['likely_component'])} "
        f'<span class="quiet">({_percent(row["component_probability"])})</span></td>',
        f"<td{urgent}>{_percent(row['failure_probability'])}</td>",
        f'<td class="day">{row["act_before"].isoformat()}</td>',
        f'<td class="day">{_days_on_list_text(row["days_on_list"])}</td>',
        f'<td class="day">{replaced}</td>',
        f"<td>{html.escape(row['model'])}, {row['age']:.0f} years</td>" if row["model"] else "<td>unknown</td>",
        f"<td>{_off_baseline_text(row['off_baseline'])}</td>",
        f"<td>{sparkline(day, row['history'])}</td>",
    ]
    return f"<tr>{''.join(cells)}</tr>"


HEADINGS = (
    "#",
    "Machine",
    "Likely component",
    "Failure probability",
    "Act before",
    "On the list",
    "Component last replaced",
    "Model, age",
    "Sensor furthest from its usual",
    f"Failure probability, last {HISTORY_DAYS} days",
)


def render_page(day: date, rows: list[dict]) -> str:
    """The day's page: `rows` (from `page_rows`, collected as dicts) most urgent first."""
    observed = day + timedelta(days=1)
    versions = sorted({row["model_version"] for row in rows})
    if rows:
        heading = "".join(f"<th>{html.escape(h)}</th>" for h in HEADINGS)
        body = "\n".join(_row_html(day, row) for row in rows)
        content = f"<table>\n<thead><tr>{heading}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"
    else:
        content = "<p>No machine reaches the worklist's threshold today: nothing to plan.</p>"
    listed = f"{len(rows)} machine{'s' if len(rows) != 1 else ''}"
    model = f"Scored by failure_model {', '.join(map(html.escape, versions))}. " if versions else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Maintenance worklist {day.isoformat()}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Maintenance worklist, {day.isoformat()}</h1>
<p class="lead">{listed} likely to have a component fail within 7 days of {observed.isoformat()} 00:00 UTC,
most urgent first. Act before: the end of those 7 days.</p>
{content}
<footer>{model}Sensor readings are 24-hour means against the machine's own mean over the {BASELINE_DAYS} days
before (sd: its standard deviations). The line shows the failure probability of the last {HISTORY_DAYS} days
(dashed: 50%; red: today).</footer>
</body>
</html>
"""
