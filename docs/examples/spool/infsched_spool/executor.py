"""SpoolExecutor: writes each due SpoolEntity as ``<topic>/<job key>.json``.

The file is named after the job key, which is the same on every attempt and
every node: a retry, or a second node running the same job after a crash,
rewrites the same file instead of adding a second one.  It is written to a
temporary name and renamed, so a reader never sees half a document.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infsched import ConfigError, JobContext
from infsched_spool.entity import SpoolEntity


def file_name(job_key: str) -> str:
    return job_key.replace(":", "_") + ".json"


class SpoolExecutor:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, job: JobContext[SpoolEntity]) -> None:
        entity = job.entity
        topic = self.directory / entity.topic
        topic.mkdir(exist_ok=True)
        document = {
            "job_key": job.job_key,
            "due_at": job.due_at.isoformat(),
            "attempt": job.attempt,
            "payload": entity.payload,
        }
        final = topic / file_name(job.job_key)
        partial = final.with_name("." + final.name + ".partial")
        partial.write_text(json.dumps(document, sort_keys=True))
        os.replace(partial, final)
        job.logger.info("spooled %s", final)


def make_executor(section: Mapping[str, Any]) -> SpoolExecutor:
    """Build from ``[plugins.spool]``: ``directory`` (required, created if missing)."""
    raw = section.get("directory")
    if not isinstance(raw, str) or not raw:
        raise ConfigError("plugin spool: [plugins.spool] directory is missing")
    directory = Path(raw)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"plugin spool: [plugins.spool] directory {raw!r} cannot be created: {exc.strerror}"
        ) from None
    if not os.access(directory, os.W_OK):
        raise ConfigError(f"plugin spool: [plugins.spool] directory {raw!r} is not writable")
    return SpoolExecutor(directory)
