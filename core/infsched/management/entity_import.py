"""EntityImport: JSON lines into a repository, checked line by line, written batch by batch.

Each line is one JSON object: an entity of the repository's type, a field
per key (times in ISO-8601 with a timezone, enums by value, decimals as
strings or numbers).  Every line is checked as `insert_many` checks an
entity (its type's own validation, each field, the retention horizon, ids
repeated within a batch) before anything of its batch is written; a batch
is then one `insert_many` call, one transaction.  A batch with a bad line
writes nothing, unless bad lines are to be skipped, when the rest of the
batch is written.  Every bad line is reported with its line number.
"""

from __future__ import annotations

import decimal
import enum
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import attrs
from sqlalchemy.exc import DBAPIError

from infsched.entities import ColumnSpec, EntitySpec, entity_spec
from infsched.errors import EntityError, InfschedError
from infsched.repositories.base import DuplicateEntityError, ShardingRepository
from infsched.repositories.entity_rows import EntityRows

#: Lines per batch (one insert_many, one transaction) unless told otherwise.
DEFAULT_BATCH_SIZE = 1000

#: Called after each batch with (bytes read so far, lines read so far).
ImportProgress = Callable[[int, int], None]


@attrs.frozen
class BadLine:
    """A line that could not be added, and why."""

    line: int
    error: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.error}"


class ImportWriteError(InfschedError):
    """The database failed a batch: says which lines were added before it, to resume after."""


@attrs.frozen
class ImportReport:
    """What one import did: lines added, bad lines, and good lines held back with their batch."""

    added: int
    #: Bad lines left out of batches that were written (skip_bad).
    skipped: int
    #: Good lines not written because their batch had a bad line (without skip_bad).
    held_back: int
    #: How many lines were bad.
    bad_count: int
    #: The bad lines, when kept (`EntityImport(keep_bad=True)`).
    bad: tuple[BadLine, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "skipped": self.skipped,
            "held_back": self.held_back,
            "bad_lines": [{"line": b.line, "error": b.error} for b in self.bad],
        }


class EntityParser:
    """Builds entities of one type from decoded JSON values, or says what is wrong."""

    def __init__(self, entity_type: type) -> None:
        self.spec: EntitySpec = entity_spec(entity_type)
        self._rows = EntityRows(self.spec)
        self._columns = {c.name: c for c in self.spec.columns}
        fields = [f for f in attrs.fields(entity_type) if f.init]
        self._alias = {f.name: f.alias for f in fields}
        self._required = [f.name for f in fields if f.default is attrs.NOTHING]

    def entity(self, data: Any) -> Any:
        """The entity `data` (a JSON object) describes, checked; EntityError if it is not one."""
        name = self.spec.name
        if not isinstance(data, dict):
            raise EntityError(f"expected a JSON object (one {name}), got {_json_kind(data)}")
        unknown = [key for key in data if key not in self._columns]
        if unknown:
            known = ", ".join(self._columns)
            raise EntityError(f"{name} has no field {unknown[0]!r} (fields: {known})")
        missing = [field for field in self._required if field not in data]
        if missing:
            raise EntityError(f"{name}.{missing[0]}: a value is required")
        values = {
            self._alias[key]: _from_json(name, self._columns[key], value)
            for key, value in data.items()
        }
        try:
            entity = self.spec.cls(**values)
        except (TypeError, ValueError) as exc:  # the type's own validation
            raise EntityError(str(exc)) from None
        self._rows.to_values(entity)  # every field, as insert_many checks it
        return entity


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r:.40}"


def _from_json(entity_name: str, column: ColumnSpec, value: Any) -> Any:
    """A field's value from its JSON form; what cannot be converted is left for the checks."""
    where = f"{entity_name}.{column.name}"
    t = column.python_type
    if value is None:
        return None
    if t is datetime and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise EntityError(
                f"{where}: {value!r} is not an ISO-8601 time, e.g. 2025-01-01T12:00:00Z"
            ) from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise EntityError(
                f"{where}: {value!r} has no timezone, so it could mean any time; "
                "add one, e.g. 2025-01-01T12:00:00Z"
            )
        return parsed.astimezone(UTC)
    if t is date and isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise EntityError(f"{where}: {value!r} is not a date, e.g. 2025-01-01") from None
    if (
        t is decimal.Decimal
        and isinstance(value, str | int | float)
        and not isinstance(value, bool)
    ):
        try:
            return decimal.Decimal(str(value))
        except decimal.InvalidOperation:
            raise EntityError(f"{where}: {value!r} is not a decimal number") from None
    if isinstance(t, type) and issubclass(t, enum.Enum):
        try:
            return t(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in t)
            raise EntityError(f"{where}: {value!r} is not one of {allowed}") from None
    return value


class EntityImport:
    """Adds JSON lines to one repository, `batch_size` lines per transaction."""

    def __init__(
        self,
        repository: ShardingRepository[Any, Any],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        skip_bad: bool = False,
        on_bad: Callable[[BadLine], None] | None = None,
        keep_bad: bool = True,
        progress: ImportProgress | None = None,
    ) -> None:
        """`on_bad` hears of each bad line as it is found; `keep_bad` keeps them in the report
        (a file with millions of bad lines need not be held in memory to be printed)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InfschedError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        self.repository = repository
        self.parser = EntityParser(repository.entity_type)
        self.batch_size = batch_size
        self.skip_bad = skip_bad
        self.on_bad = on_bad
        self.keep_bad = keep_bad
        self.progress = progress

    def run(self, lines: Iterable[bytes]) -> ImportReport:
        """Read every line of `lines` (raw, as a binary file yields them) and add the entities."""
        added = skipped = held_back = bad_count = 0
        bad: list[BadLine] = []
        read_bytes = read_lines = 0
        batch: list[tuple[int, bytes]] = []

        def flush() -> None:
            nonlocal added, skipped, held_back, bad_count
            try:
                result = self._batch(batch)
            except DBAPIError as exc:
                # On one line: PostgreSQL's messages go on with CONTEXT lines.
                reason = " ".join(str(exc.orig).split())
                raise ImportWriteError(
                    f"the database failed the batch of lines {batch[0][0]}-{batch[-1][0]} "
                    f"({reason}); nothing of it was written, and the {added} entities of "
                    f"the lines before it were added: resume from line {batch[0][0]}"
                ) from exc
            if self.keep_bad:
                bad.extend(result.bad)
            bad_count += result.bad_count
            added += result.added
            skipped += result.skipped
            held_back += result.held_back
            batch.clear()
            if self.progress is not None:
                self.progress(read_bytes, read_lines)

        for number, raw in enumerate(lines, start=1):
            read_bytes += len(raw)
            read_lines = number
            if raw.strip():  # blank lines (a trailing newline, spacing) carry nothing
                batch.append((number, raw))
            if len(batch) >= self.batch_size:
                flush()
        if batch:
            flush()
        elif self.progress is not None:
            self.progress(read_bytes, read_lines)
        return ImportReport(added, skipped, held_back, bad_count, tuple(bad))

    def _batch(self, lines: Sequence[tuple[int, bytes]]) -> ImportReport:
        """One batch: check every line, then write the good ones, or none if one is bad."""
        good: list[tuple[int, Any]] = []
        bad: list[BadLine] = []
        horizon = self.repository.retention_horizon()
        id_field = self.parser.spec.id_column.name
        key_field = self.parser.spec.sharding_column.name
        seen: dict[Any, int] = {}
        for number, raw in lines:
            try:
                entity = self._entity(raw)
                key = getattr(entity, key_field)
                if key < horizon:
                    raise EntityError(
                        f"{self.parser.spec.name}.{key_field}: {key.isoformat()} is before the "
                        f"retention horizon {horizon.isoformat()} of repository "
                        f"{self.repository.name!r}; its day is dropped, so it is refused"
                    )
                entity_id = getattr(entity, id_field)
                if entity_id is not None and entity_id in seen:
                    raise EntityError(
                        f"{self.parser.spec.name} id {entity_id!r} is on line "
                        f"{seen[entity_id]} too; ids are unique"
                    )
            except EntityError as exc:
                self._report(bad, BadLine(number, str(exc)))
                continue
            if entity_id is not None:
                seen[entity_id] = number
            good.append((number, entity))
        if bad and not self.skip_bad:
            return ImportReport(0, 0, len(good), len(bad), tuple(bad))
        while good:
            try:
                self.repository.insert_many([entity for _, entity in good])
            except DuplicateEntityError as exc:
                # An id already stored: name its line; without skip_bad the batch is done.
                lines_of = [n for n, e in good if getattr(e, id_field) == exc.entity_id]
                self._report(bad, BadLine(lines_of[0] if lines_of else lines[0][0], str(exc)))
                if not self.skip_bad or not lines_of:
                    return ImportReport(0, 0, len(good) - len(lines_of), len(bad), tuple(bad))
                good = [(n, e) for n, e in good if n not in lines_of]
                continue
            break
        return ImportReport(len(good), len(bad), 0, len(bad), tuple(bad))

    def _entity(self, raw: bytes) -> Any:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EntityError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        try:
            # A BOM (some editors start a file with one) is no JSON; without the newline,
            # an error's column is on this line rather than on "line 2".
            data = json.loads(text.removeprefix("\ufeff").rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            raise EntityError(f"not JSON: {exc.msg} at column {exc.colno}") from None
        return self.parser.entity(data)

    def _report(self, bad: list[BadLine], line: BadLine) -> None:
        bad.append(line)
        if self.on_bad is not None:
            self.on_bad(line)
