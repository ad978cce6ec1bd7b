"""JobLogger: the logger an executor gets, carrying the job key as correlation id."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds ``job_key`` to every record (for JSON logs) and to the message text."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return f"[{extra.get('job_key')}] {msg}", kwargs


#: Looked up once: getLogger takes a lock, and this runs for every job.
_JOB_LOG = logging.getLogger("infsched.job")


def job_logger(job_key: str, repository: str) -> JobLogger:
    return JobLogger(_JOB_LOG, {"job_key": job_key, "repository": repository})
