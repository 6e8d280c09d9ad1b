"""The quick start's first command, run in-process on a tiny fleet."""

from batch_scoring.__main__ import main
from batch_scoring.storage import TableStore
from batch_scoring.tables import TELEMETRY


def test_quickstart_simulates_ingests_and_prints_where_tables_are(spark, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BATCH_SCORING_INPUT_DIR", str(tmp_path / "input"))
    monkeypatch.setenv("BATCH_SCORING_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["quickstart", "--machines", "3", "--days", "2"]) == 0
    out = capsys.readouterr().out
    assert f"Simulating 3 machines over 2 days from 2015-01-01 into {tmp_path / 'input'}" in out
    summary = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("raw_")}
    assert summary["raw_telemetry"] == ["144", "0", str(tmp_path / "warehouse" / "raw_telemetry")]
    assert summary["raw_machines"] == ["3", "0", str(tmp_path / "warehouse" / "raw_machines")]
    store = TableStore(spark, tmp_path / "warehouse")
    assert store.read("raw_telemetry", TELEMETRY.schema).count() == 3 * 2 * 24
    assert main(["quickstart", "--machines", "3", "--days", "2"]) == 0
    assert f"Using the input files already in {tmp_path / 'input'}" in capsys.readouterr().out
