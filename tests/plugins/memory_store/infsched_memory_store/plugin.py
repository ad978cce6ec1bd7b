"""The plugin: registers the job store ``memory`` (``job_store = "memory"`` selects it)."""

from __future__ import annotations

from collections.abc import Iterable

from infsched import JobStoreBackend, hookimpl
from infsched_memory_store.store import MemoryJobStore


@hookimpl
def register_job_stores() -> Iterable[JobStoreBackend]:
    return [JobStoreBackend("memory", MemoryJobStore, "jobs in this process's memory (tests)")]
