"""Resident memory of this process, read from /proc (Linux)."""

from __future__ import annotations

import os
import resource


def resident_mb() -> float:
    """Current resident set size in MiB."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # not Linux: fall back to the peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
