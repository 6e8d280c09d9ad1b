"""What each column of the warehouse's tables holds, with its unit: shown beside the columns in the UI (and the
same words for every table that has the column)."""

from __future__ import annotations

import re

# The public data set states the units of voltage and rotation only; pressure and vibration are its own scales.
SENSOR_UNITS = {
    "volt": "voltage (V)",
    "rotate": "rotation speed (rpm)",
    "pressure": "pressure (the data set's unit, about 100)",
    "vibration": "vibration (the data set's unit, about 40)",
}
# a reading's unit as written after it ("231.4 V"); the data set's own scales have none
SENSOR_SYMBOLS = {"volt": " V", "rotate": " rpm", "pressure": "", "vibration": ""}
STATISTICS = {"mean": "mean", "std": "standard deviation", "min": "lowest", "max": "highest"}

COLUMN_DESCRIPTIONS = {
    "machine_id": "machine number (machineID in the input)",
    "datetime": "time of the reading or event, UTC",
    "date": "day (UTC): the partition",
    "model": "machine model, model1..model4",
    "age": "machine age, years",
    "error_id": "error logged, error1..error5",
    "comp": "component replaced, comp1..comp4",
    "failure": "component that failed, comp1..comp4",
    **{sensor: f"hourly {what}" for sensor, what in SENSOR_UNITS.items()},
    "source_file": "input file the line came from",
    "line_number": "line number in that file (the header is line 1)",
    "reason": "why the line was quarantined (docs/input-files.md lists the reasons)",
    "field": "field that failed, if one did",
    "detail": "the value, or what was wrong with the line",
    "line": "the line as read",
    "observed_at": "time of the observation: the end of the day, midnight UTC",
    "telemetry_hours_24h": "hours with readings in the 24 h before observed_at",
    "telemetry_hours_baseline": "hours with readings in the machine's baseline: the 10 days before the last 240 h",
    "telemetry_hours_since_replacement": "hours with readings in the last 24 h after the machine's last replacement",
    "predicted_component": "component predicted to fail within 7 days, or none",
    "failure_probability": "probability that some component fails within 7 days, 0-1",
    "model_version": "failure_model version that scored the row",
    "scored_at": "when the row was scored, UTC",
    "rank": "1 is the most urgent: highest failure probability first",
    "likely_component": "component most likely to be the one that fails",
    "component_probability": "probability that this component fails within 7 days, 0-1",
    "failure_probability_percent": "probability that some component fails within 7 days, percent",
    "component_probability_percent": "probability that this component fails within 7 days, percent",
    "observed_at_utc": "time of the observation, UTC (YYYY-MM-DD HH:MM): the end of the day",
    "predicted_on": "day (UTC) of the prediction, 7 days before the day its 168 hours ended",
    "listed_for": "component the machine was on that day's worklist for, or none (not listed)",
    "failed_component": "first component that failed in the 168 hours after the observation, or none",
}
_PATTERNS = (
    (r"(\w+)_(mean|std|min|max)_(\d+)h", lambda m: f"{SENSOR_UNITS[m[1]]}: {STATISTICS[m[2]]} over the last {m[3]} h"),
    (r"(error\d)_count_(\d+)h", lambda m: f"{m[1]} events in the {m[2]} h before observed_at"),
    (r"days_since_(error\d)", lambda m: f"days since {m[1]} was last logged (30: a month or more, or never)"),
    (
        r"(\w+)_shift_24h",
        lambda m: (
            f"{SENSOR_UNITS[m[1]]}: the last 24 h's mean against the machine's baseline, in its standard "
            "deviations (0: no baseline yet)"
        ),
    ),
    (
        r"(\w+)_shift_since_replacement",
        lambda m: (
            f"{SENSOR_UNITS[m[1]]}: the mean of the last 24 h after the machine's last replacement against its "
            "baseline, in its standard deviations (0: no reading since)"
        ),
    ),
    (
        r"days_since_(comp\d)_replacement",
        lambda m: f"days since {m[1]} was last replaced (365: a year or more, or never)",
    ),
    (r"probability_(\w+)", lambda m: f"probability that the outcome is {m[1]}, 0-1"),
)


def column_description(name: str) -> str:
    """What a column holds, with its unit; "" for a column this project does not know."""
    if name in COLUMN_DESCRIPTIONS:
        return COLUMN_DESCRIPTIONS[name]
    for pattern, describe in _PATTERNS:
        match = re.fullmatch(pattern, name)
        if match:
            return describe(match)
    return ""
