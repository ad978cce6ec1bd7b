"""RetryPolicy: exponential backoff with jitter, bounded by max attempts."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import attrs

from infsched.errors import InvalidArgumentError
from infsched.executors import PermanentError


def _positive(inst: object, field: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise InvalidArgumentError(f"RetryPolicy.{field.name}: {value!r} must be > 0")


@attrs.frozen
class RetryPolicy:
    """When a failed attempt runs again, and when a job gives up.

    The n-th retry waits ``base_delay * 2**(n-1)`` seconds, capped at
    `max_delay`, times a random factor in [0.5, 1.0]: jitter spreads retries of
    jobs that failed together (a gateway blip) so they do not return as a herd.
    """

    max_attempts: int = 3
    base_delay: float = attrs.field(default=2.0, validator=_positive)
    max_delay: float = attrs.field(default=300.0, validator=_positive)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        raw: float = min(self.max_delay, self.base_delay * 2.0 ** max(attempt - 1, 0))
        factor: float = (rng or random).uniform(0.5, 1.0)
        return raw * factor

    def gives_up(self, attempt: int, error: BaseException) -> bool:
        return isinstance(error, PermanentError) or attempt >= self.max_attempts

    def next_run(self, attempt: int, now: datetime) -> datetime:
        return now + timedelta(seconds=self.delay(attempt))
