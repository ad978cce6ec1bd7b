"""Logging for the command line: rich on a terminal, one plain line per record in a file or
pipe, or one JSON object per line.

Off a terminal nothing is wrapped: `grep JOB_KEY run.log` finds every line of a job.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

#: Fields of a record that are not the caller's extras.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every extra (job_key…)."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            # The engine attaches a trace only at --log-level debug; whoever attached one wants it.
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def utc_time(created: float) -> str:
    """A record's time in UTC, to the millisecond, with its offset."""
    return datetime.fromtimestamp(created, UTC).isoformat(sep=" ", timespec="milliseconds")


class LineFormatter(logging.Formatter):
    """One line per record for a file or a pipe: time with offset, level, logger, message.

    A traceback (attached at --log-level debug) follows on the lines after.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_time(record.created)


def _rich_time(local: datetime) -> Text:
    # rich passes the record's time as naive local time.
    return Text(utc_time(local.timestamp()))


class StderrHandler(logging.Handler):
    """Writes each record as a line to whatever `sys.stderr` is when the record comes.

    A StreamHandler keeps the stream it was made with; a command run in-process
    (click's test runner, an embedding application) swaps and closes stderr, and
    a later record then hit a closed file.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _console_handler(level: str, console: Console) -> logging.Handler:
    if not console.is_terminal:
        handler = StderrHandler()
        handler.setFormatter(LineFormatter())
        return handler
    rich_handler = RichHandler(
        console=console,
        show_path=False,
        rich_tracebacks=level == "debug",
        markup=False,
        log_time_format=_rich_time,
    )
    rich_handler.setFormatter(logging.Formatter("%(message)s"))
    return rich_handler


def setup_logging(
    level: str = "info", fmt: str = "rich", console: Console | None = None
) -> Callable[[], None]:
    """Configure the root logger for a command; returns what puts the old set-up back.

    `console` is the stderr console of the command line (`infsched.cli.output.stderr`);
    the ``rich`` format draws on it on a terminal and writes plain lines otherwise.
    A command run in-process (an embedding application, click's test runner)
    calls the returned function when it ends, so later log records do not go
    to the command's handler.
    """
    root = logging.getLogger()
    pool = logging.getLogger("sqlalchemy.pool")
    saved = (list(root.handlers), root.level, pool.level)
    for old in saved[0]:
        root.removeHandler(old)
    handler: logging.Handler
    if fmt == "json":
        handler = StderrHandler()
        handler.setFormatter(JsonFormatter())
    else:
        handler = _console_handler(level, console or Console(stderr=True))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # While the database is away, SQLAlchemy's pool logs an ERROR with a traceback
    # for every pooled connection it fails to reset; the node's own outage line
    # already says the database is unavailable, once.  Shown at debug level.
    pool.setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)

    def restore() -> None:
        root.removeHandler(handler)
        for old in saved[0]:
            root.addHandler(old)
        root.setLevel(saved[1])
        pool.setLevel(saved[2])

    return restore
