"""Which repository names exist, so that a name matching nothing is refused, not obeyed.

A repository exists when this node's config names it, or when the shared
database knows it: a fetch lease (every node that ever served it took one),
a job in the job store, or a pause switch.  So an operator may name, from
any machine, a repository that another node of the cluster serves, while a
typo (``pause smss``) is an error naming the repositories there are.
"""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from infsched.cluster.rows import FETCH_LEASE
from infsched.engine.controls import ALL
from infsched.errors import InfschedError
from infsched.jobstore.base import JobStore
from infsched.schema import leases, pauses

_LEASE_PREFIX = FETCH_LEASE.format("")


class UnknownRepositoryError(InfschedError):
    """A repository name that neither the config nor the database knows."""


class RepositoryNames:
    """The repository names configured here, and those the database knows."""

    def __init__(
        self, engine: sa.Engine, store: JobStore, configured: Collection[str] = ()
    ) -> None:
        self._engine = engine
        self._store = store
        self._configured = frozenset(configured)

    def exists(self, name: str) -> bool:
        """Whether `name` is configured or known to the database: three primary-key lookups."""
        if name in self._configured:
            return True
        with self._engine.connect() as conn:
            lease = conn.execute(
                sa.select(leases.c.name).where(leases.c.name == FETCH_LEASE.format(name))
            ).first()
            paused = conn.execute(sa.select(pauses.c.scope).where(pauses.c.scope == name)).first()
            job = self._store.knows_repository(conn, name)
        return lease is not None or paused is not None or job

    def known(self) -> list[str]:
        """Every repository name there is, sorted (asks the job store for its repositories)."""
        with self._engine.connect() as conn:
            served = conn.execute(
                sa.select(leases.c.name).where(
                    leases.c.name.startswith(_LEASE_PREFIX, autoescape=True)
                )
            ).scalars()
            found = {name[len(_LEASE_PREFIX) :] for name in served}
            found.update(
                conn.execute(sa.select(pauses.c.scope).where(pauses.c.scope != ALL)).scalars()
            )
            found.update(self._store.repository_names(conn))
        return sorted(found | self._configured)

    def require(self, name: str) -> str:
        """`name`, or UnknownRepositoryError naming the repositories there are."""
        if self.exists(name):
            return name
        raise self.unknown(name)

    def require_scope(self, scope: str | None) -> None:
        """A pause scope: None or ``*`` (every repository), or a repository that exists."""
        if scope is not None and scope != ALL:
            self.require(scope)

    def unknown(self, name: str) -> UnknownRepositoryError:
        known = self.known()
        listed = (
            f"the repositories are: {', '.join(known)}"
            if known
            else "none is configured ([[repositories]] in the config file) or known to the "
            "database (no fetch lease, job or pause names one)"
        )
        return UnknownRepositoryError(f"no repository named {name!r}; {listed}")
