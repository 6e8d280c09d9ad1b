"""Command line: `python -m batch_scoring simulate ...` and `python -m batch_scoring quickstart`."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from batch_scoring.ingest import InputFileError

DEFAULT_START = date(2015, 1, 1)
DEFAULT_DAYS = 365


def _date(text: str) -> date:
    return date.fromisoformat(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m batch_scoring", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="write the five tables of a simulated fleet")
    simulate.add_argument("--out", type=Path, required=True, help="folder to write PdM_<name>.csv into")
    simulate.add_argument("--machines", type=int, default=100, help="fleet size (default 100)")
    simulate.add_argument("--start", type=_date, help=f"first day, YYYY-MM-DD (default {DEFAULT_START})")
    simulate.add_argument("--days", type=int, help=f"days of telemetry (default {DEFAULT_DAYS})")
    simulate.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    simulate.add_argument("--gzip", action="store_true", help="write .csv.gz files")
    simulate.add_argument(
        "--like",
        type=Path,
        help="folder of real machines, errors, maint and failures files: keep them and simulate only "
        "telemetry consistent with them (by default over the days of their failures and errors)",
    )

    quickstart = commands.add_parser(
        "quickstart", help="simulate a fleet if the input folder is empty, then run the pipeline end to end"
    )
    quickstart.add_argument("--machines", type=int, default=100, help="fleet size to simulate (default 100)")
    quickstart.add_argument("--start", type=_date, default=DEFAULT_START, help="first day to simulate")
    quickstart.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days to simulate")
    return parser


def simulate(args: argparse.Namespace) -> None:
    from batch_scoring import simulator
    from batch_scoring.spark import build_spark_session

    spark = build_spark_session()
    if args.like is None:
        fleet = simulator.simulate_fleet(
            spark, args.machines, args.start or DEFAULT_START, args.days or DEFAULT_DAYS, args.seed
        )
        written = simulator.write_fleet(fleet, args.out, args.gzip)
    else:
        written = simulator.simulate_like(spark, args.like, args.out, args.start, args.days, args.seed, args.gzip)
    for name, path in written.items():
        print(f"{name:12} {path}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate":
            simulate(args)
        else:
            from batch_scoring.quickstart import run_quickstart

            return run_quickstart(args.machines, args.start, args.days)
    except InputFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
