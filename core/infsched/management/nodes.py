"""The cluster's own tables, read-only: nodes, leases (fetch watermarks) and day tables.

``infsched_nodes`` holds one row per node with its heartbeat;
``infsched_leases`` one row per lease (a repository's fetcher…) whose
``state`` column is the holder's progress, a JSON watermark for a fetcher.
A repository's day tables are found by name: one table ``TABLE`` with a
partition per day (``partitioned``) or tables ``TABLE_YYYYMMDD``
(``multi_table``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import as_utc
from infsched.dialects import dialect_for
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


@attrs.frozen
class Shards:
    """A repository's day tables or partitions, as names."""

    kind: str  # "parts" (partitions) or "tables"
    #: The days' tables or partitions, oldest first.
    names: tuple[str, ...]
    #: A partition for rows beyond the last day (MAXVALUE).
    catch_all: bool = False

    def describe(self) -> str:
        """``10 parts 11-20…11-29 +max``: how many, and their first and last day."""
        extra = " +max" if self.catch_all else ""
        if not self.names:
            return "no tables" if not self.catch_all else "catch-all partition only"
        days = [f"{n[-4:-2]}-{n[-2:]}" for n in (self.names[0], self.names[-1])]
        if len(self.names) == 1:
            return f"1 {self.kind[:-1]} {days[0]}{extra}"
        return f"{len(self.names)} {self.kind} {days[0]}…{days[1]}{extra}"


def read_shards(
    conn: sa.Connection, tables: Sequence[str], table_names: Iterable[str]
) -> dict[str, Shards]:
    """The day tables or partitions of each table prefix in `tables`.

    `table_names` are the database's tables (listed once by the caller).
    """
    names = sorted(table_names)
    partitioning = dialect_for(conn.engine).range_partitioning
    found = {}
    for table in tables:
        if table in names and partitioning is not None:
            parts = partitioning.partitions(conn, table) or []
            days = tuple(p.name for p in parts if p.upper is not None)
            found[table] = Shards("parts", days, catch_all=len(days) < len(parts))
            continue
        pattern = re.compile(rf"^{re.escape(table)}_\d{{8}}$")
        found[table] = Shards("tables", tuple(n for n in names if pattern.match(n)))
    return found
