"""Infinite Scheduler: a persistent, clustered, high-volume job scheduler."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("infinite-scheduler")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
