"""Shared fixtures: one local Spark session for the whole test run, sized for a 2-core machine."""

from datetime import date
from pathlib import Path

import pytest

from batch_scoring.resources import InputFiles, ModelIOManager, ParquetIOManager, SparkResource, Warehouse
from batch_scoring.simulator import simulate_fleet, write_fleet
from batch_scoring.spark import build_spark_session

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "pdm-2015"

TEST_SPARK = SparkResource(master="local[2]", shuffle_partitions=2, driver_memory="2g")
SMALL_FLEET = dict(machines=6, start=date(2015, 1, 1), days=12, seed=7)


@pytest.fixture(scope="session")
def spark():
    return build_spark_session(master="local[2]", shuffle_partitions=2, driver_memory="2g")


@pytest.fixture(scope="session")
def small_fleet_dir(spark, tmp_path_factory) -> Path:
    """The five CSV files of a small simulated fleet (6 machines, 12 days from 2015-01-01)."""
    out = tmp_path_factory.mktemp("small_fleet")
    write_fleet(simulate_fleet(spark, **SMALL_FLEET), out)
    return out


@pytest.fixture
def real_data_dir() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data set not available: {REAL_DATA} is absent (it lives in ../shared beside the repo)")
    return REAL_DATA


def dagster_resources(input_dir: Path, warehouse_dir: Path) -> dict[str, object]:
    """The production resources, pointed at test folders and sized for tests."""
    warehouse = Warehouse(root=str(warehouse_dir), spark=TEST_SPARK)
    return {
        "spark": TEST_SPARK,
        "input_files": InputFiles(input_dir=str(input_dir)),
        "warehouse": warehouse,
        "io_manager": ParquetIOManager(warehouse=warehouse),
        "model_io_manager": ModelIOManager(warehouse=warehouse),
    }
