"""The crews' page on small hand-built frames: days on the list, the probability's trail, the sensor off its
baseline, the last replacement, and the HTML they become; every expected value is worked out by hand."""

import re
from datetime import date, datetime, timedelta

import pytest

from batch_scoring.lib.crew_page import (
    HISTORY_DAYS,
    days_on_list,
    page_rows,
    probability_history,
    render_page,
    sensor_off_baseline,
)

pytestmark = pytest.mark.unit  # tiny frames in one process: part of the fast loop

DAY = date(2015, 4, 20)


def days(last: date, count: int) -> list[date]:
    return [last - timedelta(days=n) for n in range(count - 1, -1, -1)]


def by_machine_and_day(df, column):
    return {(r.machine_id, r.date): r[column] for r in df.collect()}


def test_days_on_the_list_count_the_days_in_a_row_up_to_the_history(spark):
    listed = [(1, d) for d in (date(2015, 4, 1), date(2015, 4, 2), date(2015, 4, 4), date(2015, 4, 5))]
    listed += [(2, d) for d in days(DAY, HISTORY_DAYS + 6)]  # on the list for 20 days
    counted = by_machine_and_day(
        days_on_list(spark.createDataFrame(listed, "machine_id int, date date")), "days_on_list"
    )
    # a missed day starts the count again
    assert [counted[(1, d)] for d in (date(2015, 4, 1), date(2015, 4, 2), date(2015, 4, 4), date(2015, 4, 5))] == [
        1,
        2,
        1,
        2,
    ]
    # counted up to the history's 14 days, so a day's count is the same whatever range its run read
    assert counted[(2, DAY)] == HISTORY_DAYS and counted[(2, DAY - timedelta(days=19))] == 1


def test_the_probability_trail_holds_the_last_14_days_in_order_with_gaps_left_open(spark):
    scored = [(7, d, round(0.01 * n, 2)) for n, d in enumerate(days(DAY, 20)) if d != DAY - timedelta(days=3)]
    history = by_machine_and_day(
        probability_history(spark.createDataFrame(scored, "machine_id int, date date, failure_probability double")),
        "history",
    )[(7, DAY)]
    expected_days = [d for d in days(DAY, HISTORY_DAYS) if d != DAY - timedelta(days=3)]
    assert [point.date for point in history] == expected_days
    assert history[-1].failure_probability == 0.19 and history[0].failure_probability == 0.06


def sensor_frame(spark, rows):
    """(machine_id, date, volt, rotate, pressure, vibration) as the features' 24 h means."""
    return spark.createDataFrame(
        rows,
        "machine_id int, date date, volt_mean_24h double, rotate_mean_24h double, "
        "pressure_mean_24h double, vibration_mean_24h double",
    )


def test_the_sensor_furthest_from_the_machine_s_own_baseline_is_named_with_its_usual_reading(spark):
    # 10 earlier days: volt alternates 170 and 172 (mean 171, sd about 1.05), vibration 40 and 44 (mean 42, sd 2.1);
    # today volt reads 175 (+3.8 sd) and vibration 46 (+1.9 sd): volt is furthest off, though vibration moved more
    earlier = [
        (1, d, 170.0 + 2 * (n % 2), 450.0 + n, 100.0 + n % 3, 40.0 + 4 * (n % 2))
        for n, d in enumerate(days(DAY - timedelta(days=1), 10))
    ]
    today = [(1, DAY, 175.0, 454.5, 101.0, 46.0)]
    off = by_machine_and_day(sensor_off_baseline(sensor_frame(spark, earlier + today)), "off_baseline")[(1, DAY)]
    spread = (10 / 9) ** 0.5
    assert (off.sensor, off.reading, off.usual) == ("volt", 175.0, pytest.approx(171.0))
    assert off.deviation == pytest.approx(4 / spread)
    # fewer than 7 earlier days make no baseline to compare with
    short = by_machine_and_day(sensor_off_baseline(sensor_frame(spark, earlier[-6:] + today)), "off_baseline")
    assert short[(1, DAY)] is None


def test_each_baseline_statistic_is_one_window_whatever_uses_it(spark):
    """A window expression written inline and used in several places is computed once per use: the page's query
    once held 72 sliding windows for its 12 statistics and took 7 s for a month of 30 machines."""
    plan = sensor_off_baseline(sensor_frame(spark, [(1, DAY, 170.0, 450.0, 100.0, 40.0)]))._jdf.queryExecution()
    windows, nodes = 0, [plan.optimizedPlan()]
    while nodes:  # the Window operators' own expressions, counted in the tree (its text is cut at 25 fields)
        node = nodes.pop()
        windows += node.windowExpressions().size() if node.nodeName() == "Window" else 0
        nodes += [node.children().apply(i) for i in range(node.children().size())]
    assert windows == 4 * 3  # each sensor's mean, standard deviation and count of days


FEATURE_COLUMNS = (
    "machine_id int, date date, model string, age double, days_since_comp1_replacement double, "
    "days_since_comp2_replacement double, days_since_comp3_replacement double, days_since_comp4_replacement double, "
    "volt_mean_24h double, rotate_mean_24h double, pressure_mean_24h double, vibration_mean_24h double"
)
WORKLIST_COLUMNS = (
    "rank int, machine_id int, likely_component string, component_probability double, failure_probability double, "
    "observed_at timestamp, model_version string, date date"
)


def test_a_page_row_says_when_to_act_and_when_the_likely_component_was_last_replaced(spark):
    observed_at = datetime(2015, 4, 21)
    worklist = spark.createDataFrame(
        [(1, 3, "comp2", 0.6, 0.8, observed_at, "v1", DAY), (2, 4, "comp1", 0.5, 0.55, observed_at, "v1", DAY)],
        WORKLIST_COLUMNS,
    )
    predictions = spark.createDataFrame(
        [(3, DAY, 0.8), (4, DAY, 0.55)], "machine_id int, date date, failure_probability double"
    )
    # machine 3's comp2 was replaced 12.25 days before the observation (2015-04-08 18:00); machine 4's comp1 not in
    # the last 365 days
    features = spark.createDataFrame(
        [
            (3, DAY, "model3", 7.0, 365.0, 12.25, 1.0, 2.0, 170.0, 450.0, 100.0, 40.0),
            (4, DAY, "model1", 18.0, 365.0, 3.0, 4.0, 5.0, 170.0, 450.0, 100.0, 40.0),
        ],
        FEATURE_COLUMNS,
    )
    rows = {r.machine_id: r for r in page_rows(worklist, predictions, features, [DAY]).collect()}
    assert rows[3].act_before == date(2015, 4, 28)  # the end of the 7 days from 2015-04-21 00:00
    assert rows[3].last_replaced == date(2015, 4, 8) and rows[4].last_replaced is None
    assert (rows[3].model, rows[3].age, rows[3].days_on_list) == ("model3", 7.0, 1)
    assert [p.failure_probability for p in rows[4].history] == [0.55]


def page_row(rank, machine, history, off_baseline=None, listed_days=1, replaced=date(2015, 2, 9)):
    return {
        "rank": rank,
        "machine_id": machine,
        "likely_component": "comp1",
        "failure_probability": history[-1]["failure_probability"],
        "component_probability": 0.5,
        "act_before": date(2015, 4, 28),
        "days_on_list": listed_days,
        "last_replaced": replaced,
        "model": "model<4>",
        "age": 16.0,
        "off_baseline": off_baseline,
        "history": history,
        "observed_at": datetime(2015, 4, 21),
        "model_version": "v<1>",
    }


def test_the_page_is_one_self_contained_file_with_a_row_and_a_trail_per_machine(spark):
    trail = [{"date": d, "failure_probability": 0.5} for d in days(DAY, 5) if d != DAY - timedelta(days=2)]
    off = {"sensor": "volt", "reading": 194.94, "usual": 177.2, "deviation": 2.43}
    page = render_page(DAY, [page_row(1, 11, trail, off, HISTORY_DAYS), page_row(2, 7, trail[-1:], replaced=None)])
    # nothing is fetched from elsewhere: no scripts, links, images or fonts
    assert not re.search(r"<script|<link|<img|@import|url\(|https?://(?!www\.w3\.org/2000/svg)", page)
    assert page.count("<tr>") == 3 and page.count("<svg") == 2
    assert "model&lt;4&gt;, 16 years" in page and "v&lt;1&gt;" in page and "<4>" not in page
    assert f"{HISTORY_DAYS}+ days" in page and "not in the last year" in page
    assert "volt 194.9 V" in page and "usual 177.2 V, +2.4 sd" in page
    # the missing day splits machine 11's trail in two lines; today's point is marked
    first_svg = page[page.index("<svg") : page.index("</svg>")]
    assert first_svg.count("<polyline") == 2 and 'fill="#b42318"' in first_svg
    assert "04-16 50%, 04-17 50%, 04-19 50%, 04-20 50%" in first_svg
    empty = render_page(DAY, [])
    assert "<table>" not in empty and "No machine reaches the worklist's threshold today" in empty
