"""Named leases in ``infsched_leases``: one holder at a time, expiry by the database's clock.

A lease is taken or renewed by one UPDATE that matches only when the caller
already holds it, nobody does, or the holder let it expire::

    UPDATE infsched_leases SET owner = :me, lease_until = :db_now + :seconds
    WHERE name = :name AND (owner = :me OR owner IS NULL OR lease_until < :db_now)

The row lock makes two nodes racing for a free lease take turns: the second
sees the first one's fresh expiry and matches nothing.  A lease's row is
created (INSERT that ignores an existing row) the first time it is asked for.

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

from infsched.clock import Clock, from_utc_naive, utc_naive
from infsched.cluster.dbtime import database_now
from infsched.dialects import dialect_for
from infsched.schema import leases

State = Mapping[str, Any]


@attrs.frozen
class Grant:
    """The answer to one acquire or renew."""

    held: bool
    #: The lease's state and holder before this call (read when asked for).
    state: State | None
    previous_owner: str | None
    #: The database's time when the lease was checked.
    checked_at: datetime


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

    def __init__(self, engine: sa.Engine, clock: Clock) -> None:
        self.engine = engine
        #: Only SQLite (one node) reads this clock; MySQL/MariaDB reads its own.
        self.clock = clock
        self._create = dialect_for(engine).insert_ignore(leases, ["name"])
        #: Leases whose row is known to exist.
        self._known: set[str] = set()

    def acquire(
        self,
        name: str,
        owner: str,
        seconds: float,
        *,
        state: State | None = None,
        read_state: bool = False,
    ) -> Grant:
        """Take or renew lease `name` for `seconds` of database time; set `state` if given."""
        with self.engine.begin() as conn:
            now = database_now(conn, self.clock)
            naive = utc_naive(now)
            found, previous = None, None
            if read_state:
                before = conn.execute(
                    sa.select(leases.c.owner, leases.c.state).where(leases.c.name == name)
                ).one_or_none()
                if before is not None:
                    previous, found = before.owner, _state(before.state)
            values: dict[str, Any] = {
                "owner": owner,
                "lease_until": naive + timedelta(seconds=seconds),
                "updated_at": naive,
            }
            if state is not None:
                values["state"] = json.dumps(dict(state), separators=(",", ":"), default=str)
            take = (
                leases.update()
                .where(
                    leases.c.name == name,
                    sa.or_(
                        leases.c.owner == owner,
                        leases.c.owner.is_(None),
                        leases.c.lease_until < naive,
                    ),
                )
                .values(**values)
            )
            taken = conn.execute(take).rowcount == 1
            if not taken and name not in self._known:
                row = {"name": name, "owner": None, "lease_until": None, "updated_at": naive}
                conn.execute(self._create, [{**row, "state": None}])
                taken = conn.execute(take).rowcount == 1
        self._known.add(name)
        return Grant(taken, found, previous, now)

    def release(self, name: str, owner: str) -> bool:
        """Give lease `name` up now if `owner` holds it; its state stays for the next holder."""
        with self.engine.begin() as conn:
            naive = utc_naive(database_now(conn, self.clock))
            result = conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.owner == owner)
                .values(owner=None, lease_until=None, updated_at=naive)
            )
        return result.rowcount == 1

    def leases(self) -> tuple[datetime, list[LeaseRow]]:
        """The database's time and every lease, by name."""
        with self.engine.connect() as conn:
            now = database_now(conn, self.clock)
            rows = conn.execute(sa.select(leases).order_by(leases.c.name)).all()
        return now, [_row(r) for r in rows]
