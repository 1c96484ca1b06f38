"""Logging: library code logs to the ``"vaebias"`` logger and never prints; the command
line sends the log to stderr (``-v`` for debug lines, ``-q`` for warnings only), so that
stdout carries only a command's result (``vaebias reproduce > table.md`` holds the table).

In a notebook nothing is shown below WARNING unless the caller configures logging, e.g.
``logging.basicConfig(level=logging.INFO)``.
"""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

__all__ = ["LOGGER_NAME", "configure_cli_logging", "get_logger"]

LOGGER_NAME = "vaebias"


def get_logger(name: str | None = None) -> logging.Logger:
    """The ``"vaebias"`` logger, or its child ``"vaebias.<name>"``."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


class _TqdmStderrHandler(logging.Handler):
    """Writes records to stderr through ``tqdm.write``, so progress bars stay intact."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise
            self.handleError(record)


def configure_cli_logging(level: int = logging.INFO) -> None:
    """Send the ``"vaebias"`` log to stderr as ``[vaebias HH:MM:SS] message`` lines at
    ``level``, and not to the root logger's handlers; for the command line (a second call
    replaces the first's handler)."""
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        if isinstance(h, _TqdmStderrHandler):
            logger.removeHandler(h)
    handler = _TqdmStderrHandler()
    handler.setFormatter(logging.Formatter("[vaebias %(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # the command line owns its output: not also through the root logger
