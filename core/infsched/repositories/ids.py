"""64-bit time-ordered ids, unique across a repository's day tables.

Layout of an id (a positive signed 64-bit integer, so it fits BIGINT)::

     63  62 ......................... 22  21 ........ 12  11 ........ 0
    [0 ][ 41 bits: ms since 2024-01-01 ][ 10 bits: node ][ 12 bits: seq ]

- 41 bits of milliseconds since 2024-01-01T00:00:00Z last until 2093.
- The node number tells generators apart: two generators with different
  node numbers never produce the same id.  By default it is drawn at random
  once per process; pass `node=` (0..1023) for a guarantee across processes.
- The sequence counts ids within one millisecond: 4096 per ms per generator;
  the 4097th borrows the next millisecond instead of waiting.

Generated ids are never below `FIRST_GENERATED_ID` (2^40): the ids below it
belong to the database's own id source (a MariaDB SEQUENCE or a counter
table, whose maximum is FIRST_GENERATED_ID - 1), which applications writing
rows with plain SQL draw from, so the two can never meet.  The first 2^18 ms
after the epoch (about 4.4 minutes) are counted as if they were 2^18.

Ids rise with the time they were made (not with the sharding key).  If the
wall clock steps back, the generator keeps counting from the last
millisecond it used, so its ids never repeat and never go down.  A forked
child process draws a new node number for the shared generator.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from infsched.errors import IdClockRangeError, InvalidArgumentError

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_EPOCH_MS = int(EPOCH.timestamp() * 1000)

TIMESTAMP_BITS = 41
NODE_BITS = 10
SEQUENCE_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
_MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
_MAX_MS = (1 << TIMESTAMP_BITS) - 1
#: The smallest id a generator makes; everything below is the database's id source.
FIRST_GENERATED_ID = 1 << 40
_FIRST_MS = FIRST_GENERATED_ID >> (NODE_BITS + SEQUENCE_BITS)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class IdGenerator:
    """Makes ids; thread-safe.  One per process is enough (see `default_id_generator`)."""

    def __init__(self, node: int | None = None, *, now_ms: Callable[[], int] = _wall_ms) -> None:
        if node is None:
            node = secrets.randbelow(MAX_NODE + 1)
        if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node <= MAX_NODE:
            raise InvalidArgumentError(
                f"id node must be an integer from 0 to {MAX_NODE}, got {node!r}"
            )
        self.node = node
        self._now_ms = now_ms
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def _tick(self) -> int:
        """The next (ms, sequence) packed into an id; called with the lock held."""
        ms = max(self._now_ms() - _EPOCH_MS, self._last_ms)
        if ms < 0:
            raise IdClockRangeError(
                f"the clock ({ms} ms after {EPOCH:%Y-%m-%d}) is outside the id range"
            )
        ms = max(ms, _FIRST_MS)  # below it are the database's ids (FIRST_GENERATED_ID)
        if ms == self._last_ms:
            self._sequence += 1
            if self._sequence > _MAX_SEQUENCE:
                ms, self._sequence = ms + 1, 0
        else:
            self._sequence = 0
        if not 0 <= ms <= _MAX_MS:
            raise IdClockRangeError(
                f"the clock ({ms} ms after {EPOCH:%Y-%m-%d}) is outside the id range"
            )
        self._last_ms = ms
        return (ms << (NODE_BITS + SEQUENCE_BITS)) | (self.node << SEQUENCE_BITS) | self._sequence

    def next_id(self) -> int:
        with self._lock:
            return self._tick()

    def next_ids(self, count: int) -> list[int]:
        """`count` ids under one lock acquisition, ascending."""
        with self._lock:
            return [self._tick() for _ in range(count)]


def id_created_at(entity_id: int) -> datetime:
    """When a generated id was made (to the millisecond)."""
    ms = entity_id >> (NODE_BITS + SEQUENCE_BITS)
    return EPOCH + timedelta(milliseconds=ms)


def id_node(entity_id: int) -> int:
    return (entity_id >> SEQUENCE_BITS) & MAX_NODE


def id_sequence(entity_id: int) -> int:
    return entity_id & _MAX_SEQUENCE


_default: IdGenerator | None = None
_default_lock = threading.Lock()


def default_id_generator() -> IdGenerator:
    """The process's shared generator (a random node number, drawn once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = IdGenerator()
        return _default


def _forget_default_in_child() -> None:
    # A forked child would share the parent's node number and sequence.
    global _default
    _default = None


os.register_at_fork(after_in_child=_forget_default_in_child)
