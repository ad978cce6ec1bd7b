"""The declared schedules, put in the database when a node starts.

Schedules are declared by the config (``[[schedules]]``, source ``config``)
and by plugins (``register_schedules``, source ``plugin NAME``).  A node
starting puts each one in the database (`ScheduleStore.put`: an equal
definition changes nothing, so every node of a cluster may do it, at once
too), after checking all of them: one whose executor is unknown stops the
start and nothing is put.

A schedule once declared and declared no more is not removed: the config of
one node may lag behind the others', and removing would drop its pause and
its progress.  It is named in a warning, with the command that removes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs

from infsched.errors import ScheduleError
from infsched.management.schedules import ScheduleAdmin, require_executors
from infsched.plugins import DeclaredSchedule
from infsched.schedule_store import Put
from infsched.schedules import Schedule

log = logging.getLogger("infsched.schedules")

#: The source of the config's schedules.
CONFIG_SOURCE = "config"


@attrs.frozen
class Declaration:
    """A schedule and who declares it (the source its row records)."""

    schedule: Schedule
    source: str


def declarations(
    config: Sequence[Schedule], plugins: Sequence[DeclaredSchedule]
) -> list[Declaration]:
    """The config's schedules, then the plugins'; one name declared by both is refused."""
    found = [Declaration(s, CONFIG_SOURCE) for s in config]
    by_name = {d.schedule.name: d for d in found}
    for declared in plugins:
        first = by_name.get(declared.schedule.name)
        if first is not None:
            raise ScheduleError(
                f"schedule {declared.schedule.name!r} is declared by both {first.source} and "
                f"{declared.source}; rename or drop one of them"
            )
        by_name[declared.schedule.name] = Declaration(declared.schedule, declared.source)
        found.append(by_name[declared.schedule.name])
    return found


@attrs.frozen
class AppliedDeclarations:
    """What putting the declarations did, by schedule name; and what is declared no more."""

    puts: dict[str, Put]
    #: {source: names} of stored schedules a config or plugin declared before, but not now.
    undeclared: dict[str, list[str]]

    def count(self, put: Put) -> int:
        return sum(1 for value in self.puts.values() if value == put)


def _declared_source(source: str) -> bool:
    return source == CONFIG_SOURCE or source.startswith("plugin ")


def apply_declarations(
    admin: ScheduleAdmin, declared: Sequence[Declaration]
) -> AppliedDeclarations:
    """Check every declaration's executor, then put each; log what changed and what lingers."""
    require_executors([d.schedule for d in declared], admin.executors)
    puts = {d.schedule.name: admin.store.put(d.schedule, d.source) for d in declared}
    undeclared: dict[str, list[str]] = {}
    for stored in admin.store.list():
        if stored.name not in puts and _declared_source(stored.source):
            undeclared.setdefault(stored.source, []).append(stored.name)
    applied = AppliedDeclarations(puts, undeclared)
    if declared:
        log.info(
            "declared schedules: %d added, %d replaced, %d unchanged",
            applied.count("added"),
            applied.count("replaced"),
            applied.count("unchanged"),
        )
    for source, names in sorted(undeclared.items()):
        log.warning(
            "declared by %s before, not now: %s; remove with `infsched schedules remove NAME`",
            source,
            ", ".join(names),
        )
    return applied
