"""The cluster's own tables read back: nodes (heartbeats) and leases (fetch watermarks).

``infsched_nodes`` holds one row per node with its heartbeat;
``infsched_leases`` one row per lease (a repository's fetcher…) whose
``state`` column is the holder's progress, a JSON watermark for a fetcher.
Read-only: the gauges, ``infsched nodes`` and the dashboard show them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import as_utc
from infsched.schema import leases, nodes

#: The name of a repository's fetch lease (see InfiniteScheduler.fetch_leases).
FETCH_LEASE = "fetch:{}"


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return as_utc(value)


def _required(value: datetime | None) -> datetime:
    """A NOT NULL column's value, made aware."""
    found = _aware(value)
    assert found is not None
    return found


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@attrs.frozen
class NodeRow:
    """One scheduler node as its last heartbeat left it."""

    node_id: str
    host: str
    pid: int
    version: str
    state: str
    started_at: datetime
    heartbeat_at: datetime
    #: Seconds since the last heartbeat, by the database's clock.
    heartbeat_age: float
    in_flight: int
    #: The database member its last heartbeat went through; None on SQLite.
    database_member: str | None = None

    def as_json(self) -> dict[str, Any]:
        values = attrs.asdict(self)
        values["started_at"] = _iso(self.started_at)
        values["heartbeat_at"] = _iso(self.heartbeat_at)
        values["heartbeat_age"] = round(self.heartbeat_age, 3)
        return values


@attrs.frozen
class LeaseRow:
    """One lease: who holds it until when, and the progress it carries."""

    name: str
    owner: str | None
    lease_until: datetime | None
    updated_at: datetime
    state: str | None

    def held(self, now: datetime) -> bool:
        return self.owner is not None and self.lease_until is not None and self.lease_until > now

    def watermark(self, now: datetime) -> str:
        """A fetch lease's progress as short text, seen at database time `now`.

        A fetcher's state says up to when entities are fetched (``due_through``):
        shown as how far ahead of now that is, and by which node (``nobody`` when
        the lease has lapsed: no node fetches).  Any other state is shown as ``k=v``.
        """
        if not self.state:
            return "-"
        try:
            value = json.loads(self.state)
        except ValueError:
            return self.state
        if not isinstance(value, dict):
            return str(value)
        through = value.get("due_through")
        if isinstance(through, str):
            try:
                ahead = (datetime.fromisoformat(through) - now).total_seconds()
            except (ValueError, TypeError):
                pass
            else:
                holder = self.owner if self.held(now) and self.owner else "nobody"
                return f"{ahead:+.1f}s {holder}"
        return " ".join(f"{k}={v}" for k, v in value.items())

    def fetches(self, repository: str) -> bool:
        """Whether this is `repository`'s fetch lease, whose state is its fetch watermark."""
        return self.name == FETCH_LEASE.format(repository)


def read_nodes(conn: sa.Connection, now: datetime) -> list[NodeRow]:
    """Every node row, with heartbeat ages measured at `now` (the database's clock)."""
    found = []
    for row in conn.execute(sa.select(nodes).order_by(nodes.c.node_id)).mappings():
        heartbeat = _required(row["heartbeat_at"])
        found.append(
            NodeRow(
                node_id=row["node_id"],
                host=row["host"],
                pid=int(row["pid"]),
                version=row["version"],
                state=row["state"],
                started_at=_required(row["started_at"]),
                heartbeat_at=heartbeat,
                heartbeat_age=max((now - heartbeat).total_seconds(), 0.0),
                in_flight=int(row["in_flight"]),
                database_member=row["database_member"],
            )
        )
    return found


def read_leases(conn: sa.Connection) -> list[LeaseRow]:
    found = []
    for row in conn.execute(sa.select(leases).order_by(leases.c.name)).mappings():
        found.append(
            LeaseRow(
                name=row["name"],
                owner=row["owner"],
                lease_until=_aware(row["lease_until"]),
                updated_at=_required(row["updated_at"]),
                state=row["state"],
            )
        )
    return found
