"""Logging for the command line: rich on a terminal, or one JSON object per line."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from rich.console import Console
from rich.logging import RichHandler

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


def setup_logging(level: str = "info", fmt: str = "rich") -> None:
    """Configure the root logger once for a command."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
    else:
        handler = RichHandler(
            console=Console(stderr=True),
            show_path=False,
            rich_tracebacks=level == "debug",
            markup=False,
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # While the database is away, SQLAlchemy's pool logs an ERROR with a traceback
    # for every pooled connection it fails to reset; the node's own outage line
    # already says the database is unavailable, once.  Shown at debug level.
    logging.getLogger("sqlalchemy.pool").setLevel(
        logging.DEBUG if level == "debug" else logging.CRITICAL
    )
