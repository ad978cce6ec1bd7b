"""Seeing and steering a running cluster: jobs, history statistics, nodes, pauses.

`JobAdmin` is the Python API behind ``infsched jobs …``, ``pause``,
``resume``, ``nodes`` and ``stats``, and behind `InfiniteScheduler`'s
methods of the same names.  It reads and writes only the database, so it
works from any machine against any node's database.
"""

from infsched.cluster.rows import NodeRow
from infsched.management.jobs import (
    JobAdmin,
    JobNotFoundError,
    JobRow,
    JobStateError,
    RepositoryStats,
    Stats,
)
from infsched.management.repository_names import RepositoryNames, UnknownRepositoryError

__all__ = [
    "JobAdmin",
    "JobNotFoundError",
    "JobRow",
    "JobStateError",
    "NodeRow",
    "RepositoryNames",
    "RepositoryStats",
    "Stats",
    "UnknownRepositoryError",
]
