"""Named leases in ``infsched_leases``: one holder at a time, expiry by the database's clock.

A node takes or renews a lease in one transaction: it locks the lease's row
(``SELECT … FOR UPDATE SKIP LOCKED``), and if the row says the lease is its
own, nobody's, or expired by ``UTC_TIMESTAMP(6)``, sets itself as owner until
the database's time plus the lease's duration.  Two nodes racing for a free
lease take turns on the row lock, and the second sees the first one's fresh
expiry.  SKIP LOCKED keeps a node from waiting behind a holder that froze in
the middle of a renewal (its lock lasts until it wakes up or the database
drops its connection): that lease is simply not taken this time.  A lease's
row is created (an INSERT that ignores an existing row) the first time it is
asked for.

A lease also carries a small JSON state that its holder leaves for whoever
holds it next, and for the dashboard: a fetcher's progress, the time
maintenance last ran.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import from_utc_naive, utc_naive
from infsched.database import Database
from infsched.schema import leases

State = Mapping[str, Any]


@attrs.frozen
class Grant:
    """The answer to one acquire or renew."""

    held: bool
    #: The lease's state and holder before this call (None when the row was locked).
    state: State | None
    previous_owner: str | None
    #: The database's time when the lease was checked.
    checked_at: datetime
    #: Another session had the row locked (a node trying for the lease at the same
    #: moment, or one that froze mid-renewal): nothing is known, nothing changed.
    skipped: bool = False


@attrs.frozen
class LeaseRow:
    """One lease as ``infsched_leases`` holds it."""

    name: str
    owner: str | None
    lease_until: datetime | None
    state: State | None
    updated_at: datetime

    def held_at(self, now: datetime) -> bool:
        """Whether someone holds it at database time `now`."""
        return self.owner is not None and self.lease_until is not None and self.lease_until >= now


def _state(text: str | None) -> State | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _row(row: Any) -> LeaseRow:
    return LeaseRow(
        name=row.name,
        owner=row.owner,
        lease_until=None if row.lease_until is None else from_utc_naive(row.lease_until),
        state=_state(row.state),
        updated_at=from_utc_naive(row.updated_at),
    )


class LeaseStore:
    """Acquires, renews and releases named leases; every time comes from the database."""

    def __init__(self, database: Database) -> None:
        #: Its clock is read only on SQLite (one node); MySQL/MariaDB reads its own.
        self.database = database
        self.engine = database.engine
        self._dialect = database.dialect
        self._create = self._dialect.insert_ignore(leases, ["name"])
        #: Leases whose row is known to exist.
        self._known: set[str] = set()

    def acquire(
        self,
        name: str,
        owner: str,
        seconds: float,
        *,
        state: State | None = None,
    ) -> Grant:
        """Take or renew lease `name` for `seconds` of database time; set `state` if given.

        Never waits for a lock: a lease row another session holds locked (its
        holder froze in the middle of a renewal) is not taken this time.
        """
        with self.engine.begin() as conn:
            now = self.database.now(conn)
            naive = utc_naive(now)
            row = self._lock_row(conn, name, naive)
            if row is None:
                return Grant(False, None, None, now, skipped=True)
            free = row.owner is None or row.lease_until is None or row.lease_until < naive
            if row.owner != owner and not free:
                return Grant(False, _state(row.state), row.owner, now)
            values: dict[str, Any] = {
                "owner": owner,
                "lease_until": naive + timedelta(seconds=seconds),
                "updated_at": naive,
            }
            if state is not None:
                values["state"] = json.dumps(dict(state), separators=(",", ":"), default=str)
            conn.execute(leases.update().where(leases.c.name == name).values(**values))
        return Grant(True, _state(row.state), row.owner, now)

    def _lock_row(self, conn: sa.Connection, name: str, naive_now: datetime) -> Any:
        """The lease's row, locked until commit; None if another session holds it locked."""
        locking = self._dialect.lock_skipping_locked(
            sa.select(leases.c.owner, leases.c.lease_until, leases.c.state).where(
                leases.c.name == name
            )
        )
        row = conn.execute(locking).one_or_none()
        if row is not None or name in self._known:
            return row
        exists = conn.execute(sa.select(leases.c.name).where(leases.c.name == name)).first()
        if exists is not None:  # there, but locked
            return None
        created = {"name": name, "owner": None, "lease_until": None, "updated_at": naive_now}
        conn.execute(self._create, [{**created, "state": None}])
        self._known.add(name)
        return conn.execute(locking).one_or_none()

    def release(self, name: str, owner: str) -> bool:
        """Give lease `name` up now if `owner` holds it; its state stays for the next holder."""
        with self.engine.begin() as conn:
            naive = utc_naive(self.database.now(conn))
            result = conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.owner == owner)
                .values(owner=None, lease_until=None, updated_at=naive)
            )
        return result.rowcount == 1

    def leases(self) -> tuple[datetime, list[LeaseRow]]:
        """The database's time and every lease, by name."""
        with self.engine.connect() as conn:
            now = self.database.now(conn)
            rows = conn.execute(sa.select(leases).order_by(leases.c.name)).all()
        return now, [_row(r) for r in rows]
