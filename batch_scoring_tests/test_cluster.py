"""The pipeline on a real Spark standalone cluster (a master and a worker started from the installed
pyspark, on loopback), run from the `dagster` command line over a range of days, gives the same rows as on
local Spark. The cluster and the run start with the session (separate_processes.py); this test runs last."""

from batch_scoring.lib.scoring import PREDICTIONS_SCHEMA
from batch_scoring.lib.tables import TELEMETRY
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.separate_processes import CLUSTER_DAYS, master_state

DAY = CLUSTER_DAYS[-1]  # the quick start scored it locally: its warehouse is the local run to compare with


def test_a_range_scored_from_the_command_line_on_a_standalone_cluster_equals_the_local_run(
    spark, cluster_run, trained_fleet
):
    # two days' telemetry, predictions and worklists in one run: an input file parsed and a model applied to a
    # table read, on the cluster's executors
    assert cluster_run.process.returncode == 0, cluster_run.output[-5000:]
    on_cluster, local = cluster_run.warehouse, trained_fleet[1]

    state = master_state(cluster_run.web_port)
    applications = [app["name"] for app in state["completedapps"] + state["activeapps"]]
    assert applications == ["batch_scoring"], "the run's Spark application ran on the cluster"

    cluster_rows, local_rows = (
        DeltaTables(spark, str(w)).read("raw_telemetry", TELEMETRY.schema, [DAY]) for w in (on_cluster, local)
    )
    assert cluster_rows.count() == local_rows.count() == 30 * 24
    assert cluster_rows.exceptAll(local_rows).isEmpty()
    predictions = [
        DeltaTables(spark, str(warehouse)).read("daily_predictions", PREDICTIONS_SCHEMA, [DAY]).drop("scored_at")
        for warehouse in (on_cluster, local)
    ]
    assert predictions[0].count() == predictions[1].count() == 30
    assert predictions[0].exceptAll(predictions[1]).isEmpty()
    scored = DeltaTables(spark, str(on_cluster)).read("daily_predictions", PREDICTIONS_SCHEMA, list(CLUSTER_DAYS))
    assert sorted(str(r.date) for r in scored.select("date").distinct().collect()) == list(CLUSTER_DAYS)
    assert scored.count() == 30 * len(CLUSTER_DAYS)
    csv_files = [w / "worklists" / f"maintenance_worklist_{DAY}.csv" for w in (on_cluster, local)]
    assert csv_files[0].read_text() == csv_files[1].read_text()
    first_day_csv = on_cluster / "worklists" / f"maintenance_worklist_{CLUSTER_DAYS[0]}.csv"
    assert first_day_csv.read_text().startswith("rank,machine_id,")
    # the rows compared are the cluster run's: it committed once more to each table
    for table in ("raw_telemetry", "daily_predictions"):
        versions = [DeltaTables(spark, str(w)).version(table) for w in (on_cluster, local)]
        assert versions[0] == versions[1] + 1, table
