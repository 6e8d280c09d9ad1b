"""The project's own progress in a run's log. The pure modules log to the `batch_scoring` logger; while a step
runs, its records go to the run's log (a Dagster step's `context.log`, or Pipes' log on Databricks), so the run
page says what a step is doing during the tens of seconds it takes (rows read, kept, scored, written)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

PROJECT_LOGGER = "batch_scoring"


class _ToRunLog(logging.Handler):
    def __init__(self, run_log: logging.Logger) -> None:
        super().__init__(logging.INFO)
        self._run_log = run_log

    def emit(self, record: logging.LogRecord) -> None:
        self._run_log.log(record.levelno, record.getMessage())


@contextmanager
def progress_logged_to(run_log: logging.Logger) -> Iterator[None]:
    """The project's log records at INFO and above go to `run_log` meanwhile."""
    logger = logging.getLogger(PROJECT_LOGGER)
    handler = _ToRunLog(run_log)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the run's log shows it once, in the console as well
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
