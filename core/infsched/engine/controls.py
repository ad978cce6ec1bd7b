"""Pause and resume, stored in the database so they hold for every node."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from infsched.clock import utc_naive
from infsched.database import Database
from infsched.schema import pauses

#: The scope that pauses every repository.
ALL = "*"


class Controls:
    """Reads and sets pause switches; reads are cached for `ttl` seconds.

    The cache keeps the claim loop from asking the database on every turn;
    a pause therefore takes effect on every node within `ttl` seconds.
    """

    def __init__(self, database: Database, ttl: float = 1.0) -> None:
        self._engine = database.engine
        self._clock = database.clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cached: frozenset[str] = frozenset()
        self._read_at = float("-inf")
        self._insert_ignore = database.dialect.insert_ignore(pauses, ["scope"])

    def pause(self, repository: str | None = None, by: str = "api") -> None:
        with self._engine.begin() as conn:
            conn.execute(
                self._insert_ignore,
                [
                    {
                        "scope": repository or ALL,
                        "paused_by": by,
                        "paused_at": utc_naive(self._clock.now()),
                    }
                ],
            )
        self._read_at = float("-inf")

    def resume(self, repository: str | None = None) -> None:
        with self._engine.begin() as conn:
            conn.execute(pauses.delete().where(pauses.c.scope == (repository or ALL)))
        self._read_at = float("-inf")

    def paused(self, *, fresh: bool = False) -> frozenset[str]:
        """The paused scopes: repository names, and ``*`` for everything."""
        with self._lock:
            if fresh or time.monotonic() - self._read_at > self._ttl:
                with self._engine.connect() as conn:
                    self._cached = frozenset(conn.execute(sa.select(pauses.c.scope)).scalars())
                self._read_at = time.monotonic()
            return self._cached

    def is_paused(self, repository: str) -> bool:
        scopes = self.paused()
        return ALL in scopes or repository in scopes
