"""Which member of a database a node's connections go to, and the move when it fails.

A database may be reached through several members (a Galera cluster: every
member holds every row).  `MemberRoute` connects each new pooled connection to
the member in use, and when that one refuses the connection or says it does
not serve (`Dialect.member_status`: a Galera member outside the primary
component, or still joining), to the next in the configured order, wrapping
round.  The route stays on the member it moved to: it does not move back when
the first one returns, so nodes that were given one order keep writing through
one member, where Galera has nothing to certify against.

The pool is told nothing: a member that died breaks its connections, which
SQLAlchemy invalidates (the whole pool at once on a disconnect), and the
connections made after that come here.  Each connection's info carries the
member it reached (`member_of`), which the node's heartbeat records.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import ConnectionPoolEntry

from infsched.dburl import DatabaseUrl, Endpoint
from infsched.dialects import Dialect
from infsched.dialects.base import MemberStatus

log = logging.getLogger("infsched.database")

#: Key of a pooled connection's info: the member it reached, as `MemberRoute.label` shows it.
MEMBER_KEY = "infsched.member"


def member_of(conn: sa.Connection) -> str | None:
    """The member `conn` reached ("m2 at db2:3306"), or None where no route made it."""
    member = conn.info.get(MEMBER_KEY)
    return member if isinstance(member, str) else None


class MemberRoute:
    """The members of one database, in order, and the one new connections go to."""

    def __init__(self, url: DatabaseUrl, dialect: Dialect) -> None:
        self.url = url
        self.dialect = dialect
        self.endpoints = url.endpoints
        self._lock = threading.Lock()
        self._current = 0
        #: Moves from one member to another so far.
        self.moves = 0

    @property
    def current(self) -> Endpoint:
        with self._lock:
            return self.endpoints[self._current]

    def label(self, endpoint: Endpoint, status: MemberStatus) -> str:
        where = str(endpoint)
        return f"{status.name} at {where}" if status.name else where

    def install(self, engine: sa.Engine) -> None:
        """Make `engine`'s new connections through this route."""
        sa.event.listen(engine, "do_connect", self._do_connect)

    def _do_connect(
        self,
        dialect: sa.Dialect,
        record: ConnectionPoolEntry,
        cargs: tuple[Any, ...],
        cparams: dict[str, Any],
    ) -> Any:
        def connect(endpoint: Endpoint) -> Any:
            params = {**cparams, "host": endpoint.host}
            if endpoint.port is not None:
                params["port"] = endpoint.port
            else:
                params.pop("port", None)
            return dialect.connect(*cargs, **params)

        connection, label = self.connect(connect)
        record.info[MEMBER_KEY] = label
        return connection

    def connect(self, connect: Callable[[Endpoint], Any]) -> tuple[Any, str]:
        """A driver connection to the member in use, or the next that serves; and its label.

        Every member is tried once, from the one in use.  When none serves, the
        first that answered is returned anyway (its statements fail, as they
        would without a route, and the next connection tries again); when none
        answered, the last member's error is raised.
        """
        with self._lock:
            start = self._current
        count = len(self.endpoints)
        fallback: tuple[Any, str] | None = None
        failures: list[str] = []
        last_error: BaseException | None = None
        for step in range(count):
            index = (start + step) % count
            endpoint = self.endpoints[index]
            try:
                connection = connect(endpoint)
            except Exception as exc:  # the driver's error: this member does not answer
                last_error = exc
                failures.append(f"{endpoint}: {_first_line(exc)}")
                continue
            try:
                status = self.dialect.member_status(connection)
            except Exception as exc:  # it answered, then broke
                last_error = exc
                failures.append(f"{endpoint}: {_first_line(exc)}")
                _close(connection)
                continue
            label = self.label(endpoint, status)
            if not status.ready:
                failures.append(f"{endpoint}: {status.why}")
                if fallback is None:
                    fallback = (connection, label)
                else:
                    _close(connection)
                continue
            if fallback is not None:
                _close(fallback[0])
            self._moved_to(index, start, failures)
            return connection, label
        if fallback is not None:
            return fallback
        assert last_error is not None
        raise last_error

    def _moved_to(self, index: int, start: int, failures: list[str]) -> None:
        with self._lock:
            if index == self._current:
                return
            before = self.endpoints[self._current]
            self._current = index
            self.moves += 1
        if index != start or failures:
            log.warning(
                "database: moving from member %s to %s (%s)",
                before,
                self.endpoints[index],
                "; ".join(failures) or "another connection moved",
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _close(connection: Any) -> None:
    try:
        connection.close()
    except Exception:  # already broken: nothing to release
        log.debug("closing a connection to a member failed", exc_info=True)
