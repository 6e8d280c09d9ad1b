"""Shared fixtures: one local Spark session for the whole test run, sized for a 2-core machine."""

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy

from batch_scoring import settings
from batch_scoring.cli import main
from batch_scoring.defs.assets import SPARK_ASSETS
from batch_scoring.defs.assets.raw import RAW_ASSETS
from batch_scoring.defs.definitions import pipeline_resources
from batch_scoring.defs.metadata import materialized_metadata
from batch_scoring.defs.partitions import partition_range_tags
from batch_scoring.defs.resources import SparkResource
from batch_scoring.lib.simulator import simulate_fleet, write_fleet
from batch_scoring.lib.spark import build_spark_session
from batch_scoring.storage.delta import DeltaTables
from batch_scoring.storage.models import REGISTRY_SCHEMA, ModelStore

# the processes tests start (webserver and daemon, cluster, killed run, Databricks job): started early, checked last
pytest_plugins = ["batch_scoring_tests.separate_processes"]

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "pdm-2015"
# screenshots of what users look at (the UI, the crews' page), kept after the suite for people to look at
ARTIFACTS = Path(os.environ.get("BATCH_SCORING_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))

# the project's defaults with a session sized for 2 cores and tiny frames. The tests run hundreds of different
# queries over a few hundred rows each, so Spark evaluates expressions instead of generating and compiling a class
# per query (code generation pays off on real volumes; the project's defaults keep it), and the JVM collects with
# one thread: ingesting the small fleet's five raw tables, warm, 20 to 24 s against 27 to 34 s (docs/benchmarks.md).
TEST_SPARK_CONFIG = {
    **settings.SPARK_DEFAULTS,
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "2",
    "spark.driver.memory": "2g",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.driver.extraJavaOptions": "-XX:+UseSerialGC",
}
TEST_SPARK = SparkResource(spark_config=TEST_SPARK_CONFIG)
# the Spark settings of the short-lived processes tests start (command-line runs, the daemon's runs, the Databricks
# double's task): one day of a small fleet, so the JVM compiles with C1 only and collects with one thread. Measured
# on a fresh one-day run: 57 CPU seconds against 89 and no slower (46 s against 48 s); the JIT's C2 pays off only
# in long-lived processes (the test process keeps it), and a cluster's executors get the same. docs/benchmarks.md
# has the figures.
# With C1 alone the JVM reserves 48 MB for compiled code (240 MB tiered), and a day's run fills it: the JIT stops,
# then the JVM cannot even link a method ("Out of space in CodeCache for adapters") and the run dies.
SHORT_LIVED_JVM = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m -XX:+UseSerialGC"
SHORT_RUN_SPARK_CONFIG = {
    "spark.sql.shuffle.partitions": "2",
    "spark.driver.memory": "1g",
    "spark.driver.extraJavaOptions": SHORT_LIVED_JVM,
    "spark.executor.extraJavaOptions": SHORT_LIVED_JVM,
}
SMALL_FLEET = dict(machines=6, start=date(2015, 1, 1), days=12, seed=7)
SMALL_FLEET_DAYS = ("2015-01-01", "2015-01-12")


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
def _sqlite_without_fsync(connection, _record) -> None:
    """The Dagster instances this process writes (SQLite) skip fsync: a test's runs need not outlive a power cut, and
    a 120-day run's thousands of events otherwise wait on the disk (4.3 s against 2.1 s for 240 events)."""
    if type(connection).__module__ == "sqlite3":
        connection.execute("PRAGMA synchronous=OFF")


@pytest.fixture(scope="session")
def spark():
    return build_spark_session(TEST_SPARK_CONFIG)


@pytest.fixture(scope="session")
def small_fleet_dir(spark, tmp_path_factory) -> Path:
    """The five CSV files of a small simulated fleet (6 machines, 12 days from 2015-01-01)."""
    out = tmp_path_factory.mktemp("small_fleet")
    write_fleet(simulate_fleet(spark, **SMALL_FLEET), out)
    return out


@pytest.fixture(scope="session")
def small_fleet_ingested(small_fleet_dir, tmp_path_factory):
    """The small fleet's twelve days of every raw table ingested in one run: the run's result and its
    warehouse (read-only: tests that write copy it)."""
    warehouse = tmp_path_factory.mktemp("ingested")
    result = dg.materialize(
        RAW_ASSETS,
        resources=dagster_resources(small_fleet_dir, warehouse),
        tags=partition_range_tags(*SMALL_FLEET_DAYS),
    )
    return result, warehouse


@pytest.fixture
def real_data_dir() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data set not available: {REAL_DATA} is absent (it lives in ../shared beside the repo)")
    return REAL_DATA


@pytest.fixture
def catalog_schema(spark, tmp_path):
    """A schema of the session's catalog whose managed tables live under `tmp_path` (Unity Catalog's role)."""
    name = f"pdm_{tmp_path.name.replace('-', '_')}"
    spark.sql(f"CREATE SCHEMA spark_catalog.{name} LOCATION '{tmp_path / 'managed'}'")
    yield f"spark_catalog.{name}"
    spark.sql(f"DROP SCHEMA spark_catalog.{name} CASCADE")


def dagster_resources(input_dir: Path, warehouse_dir: Path, catalog_schema: str = "") -> dict[str, object]:
    """The production resources, pointed at test folders (and a catalog schema) and sized for tests."""
    return pipeline_resources(TEST_SPARK, str(input_dir), str(warehouse_dir), catalog_schema)


# no search on the validation days: the threshold alone is chosen there
SMALL_FOREST = {
    "num_trees": 15,
    "max_depth": 8,
    "holdout_days": 30,
    "search_max_depths": [],
    "search_class_weightings": [],
}


def materialize(input_dir, warehouse, selection, model_config=None, run_config=None, raise_on_error=True, **kwargs):
    """Materialize `selection` of the project's assets with the test resources (and a small forest)."""
    ops = dict((run_config or {}).get("ops", {}))
    if "failure_model" in {key.to_user_string() for a in selection for key in a.keys}:
        ops["failure_model"] = {"config": {**SMALL_FOREST, **(model_config or {})}}
    return dg.materialize(
        SPARK_ASSETS,
        selection=selection,
        resources=dagster_resources(input_dir, warehouse),
        run_config={"ops": ops} if ops else None,
        raise_on_error=raise_on_error,
        **kwargs,
    )


@dataclass(frozen=True)
class Quickstart:
    """What the quick start left: its exit code and printed output, its folders and its Dagster instance."""

    exit_code: int
    output: str
    input_dir: Path
    warehouse: Path
    dagster_home: Path


# to 2015-04-30, about 55 failures; the last day scored (the tests that score more days copy the warehouse)
QUICKSTART_ARGS = ("--machines", "30", "--start", "2015-01-01", "--days", "120", "--score-days", "1")


@pytest.fixture(scope="session")
def quickstart(spark, tmp_path_factory) -> Quickstart:
    """The quick start's first command (`python -m batch_scoring quickstart`) run in this process on 30 machines
    over 120 days: the simulated input, every raw table, features, a trained model and the last day scored.

    The shared fleet of the tests that need a trained model or a history of features. Read-only: tests that
    write copy its input folder or warehouse first (`copy_warehouse`)."""
    root = tmp_path_factory.mktemp("quickstart")
    home = root / "dagster_home"
    create_instance(home)
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(printed):
        env.setenv(settings.INPUT_DIR_ENV, str(root / "input"))
        env.setenv(settings.WAREHOUSE_DIR_ENV, str(root / "warehouse"))
        env.setenv(settings.SPARK_CONF_ENV, json.dumps(TEST_SPARK_CONFIG))
        env.setenv("DAGSTER_HOME", str(home))
        env.setenv(settings.FIRST_DAY_ENV, settings.DEFAULT_FIRST_DAY)  # the partitions this process loaded
        exit_code = main(["quickstart", *QUICKSTART_ARGS])
    return Quickstart(exit_code, printed.getvalue(), root / "input", root / "warehouse", home)


@pytest.fixture(scope="session")
def trained_fleet(quickstart) -> tuple[Path, Path]:
    """The quick start's input folder and warehouse: raw tables, features and a trained model for 30 machines
    over 2015-01-01 .. 2015-04-30 (and that last day scored)."""
    assert quickstart.exit_code == 0, quickstart.output
    return quickstart.input_dir, quickstart.warehouse


def copy_warehouse(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def dagster_command(executable: str, *args: str) -> list[str]:
    """A Dagster command-line tool of the environment the tests run in (dagster, dagster-webserver, ...)."""
    return [str(Path(sys.executable).parent / executable), *args]


def create_instance(dagster_home: Path) -> None:
    """Create the instance's storage and schema at `dagster_home` before any process opens it: processes
    started together on a new SQLite home (webserver, daemon, CLI runs) race on the schema migration."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_runs(limit=1)  # opens the run, event log and schedule storages, migrated to the newest schema


def deployment_env(input_dir: Path, warehouse: Path, dagster_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a deployment's processes: the project's folders, the instance at
    `dagster_home`, and Spark sized for tests."""
    create_instance(dagster_home)
    return {
        **os.environ,
        settings.INPUT_DIR_ENV: str(input_dir),
        settings.WAREHOUSE_DIR_ENV: str(warehouse),
        settings.SPARK_CONF_ENV: json.dumps(SHORT_RUN_SPARK_CONFIG),
        "DAGSTER_HOME": str(dagster_home),
        **extra,
    }


def start_process(command: list[str], env: dict[str, str], output=subprocess.PIPE) -> subprocess.Popen:
    """`command` from the repository root in its own process group, so `stop_process` ends its children too."""
    return subprocess.Popen(
        command,
        env=env,
        cwd=REPO_ROOT,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop_process(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def days_with_rows(tables: DeltaTables, name: str) -> list[str]:
    """The days of a daily table that hold rows, in its newest version."""
    if not tables.exists(name):
        return []
    days = tables.spark.read.format("delta").load(tables.location(name)).select("date").distinct()
    return sorted(str(row[0]) for row in days.collect())


def model_store(spark, warehouse: Path) -> ModelStore:
    return ModelStore(DeltaTables(spark, str(warehouse)), "failure_model")


def model_manifests(spark, warehouse: Path) -> list[dict]:
    """Every registered model version's manifest, oldest first."""
    store = model_store(spark, warehouse)
    if not store.tables.exists(store.registry):
        return []
    rows = store.tables.read(store.registry, REGISTRY_SCHEMA).orderBy("version").select("manifest").collect()
    return [json.loads(row.manifest) for row in rows]


def materialization_metadata(result: dg.ExecuteInProcessResult, asset_name: str) -> dict[str, object]:
    """The metadata values of an asset's last materialization in a run."""
    return materialized_metadata(result.all_events)[asset_name]


def model_versions(spark, warehouse: Path) -> list[str]:
    return [manifest["version"] for manifest in model_manifests(spark, warehouse)]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("Chromium is not installed: `apt-get install chromium` (.ci/run installs it)")


def open_in_chromium(url: str, screenshot: Path, tmp_path: Path, window: str = "2400,1600") -> str:
    """Load `url` headless, give the UI time to fetch and render, save a screenshot and return the page's DOM as the
    browser built it (one load does both)."""
    common = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-sync",
        "--disable-background-networking",
        "--disable-component-update",
        f"--window-size={window}",
        "--virtual-time-budget=20000",
    ]
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    profile = tmp_path / f"chromium-{screenshot.stem}"
    page = subprocess.run(
        [*common, f"--user-data-dir={profile}", f"--screenshot={screenshot}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert page.returncode == 0, page.stderr[-2000:]
    assert screenshot.stat().st_size > 10_000
    return page.stdout


def text_of(html: str) -> str:
    """The text a page shows: no scripts or styles, no tags, single spaces."""
    shown = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.DOTALL)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", shown))
