"""The exceptions a user of Infinite Scheduler may see.

Each carries a message meant to be printed as it is: it names what is wrong
and, where there is one, what to do about it.
"""


class InfschedError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(InfschedError):
    """A configuration value, file or key is invalid."""


class PluginError(InfschedError):
    """A plugin failed to load, or two plugins claim the same name."""


class PluginConflictError(PluginError):
    """Two plugins register something under the same name."""


class DatabaseUnreachableError(InfschedError):
    """The database named by a URL does not accept connections."""


class EntityError(InfschedError):
    """An entity type is declared wrongly, or an entity value is invalid."""


class InvalidArgumentError(InfschedError, ValueError):
    """A value passed to the API is out of its range: a count below 1, a negative number
    of days, an id node beyond the id layout. Also a ValueError, as it was before."""


class InvalidNameError(InvalidArgumentError):
    """A name that becomes part of an SQL identifier is not a plain identifier, or is
    too long for the database's identifiers."""


class NaiveDatetimeError(InvalidArgumentError):
    """A datetime without a timezone where a point in time is needed."""


class UnsupportedDatabaseError(InfschedError, ValueError):
    """The database is not one Infinite Scheduler supports, or not for what was asked."""


class BatchResultError(InfschedError, RuntimeError):
    """A batch executor returned a result list that does not match its jobs."""


class SchedulerStateError(InfschedError, RuntimeError):
    """A scheduler node is used out of order (started twice)."""


class TruncatedResultError(InfschedError, RuntimeError):
    """The database returned less than the statement must have (an aggregate cut at the
    server's length limit); nothing was changed on the strength of it."""


class IdClockRangeError(InfschedError, OverflowError):
    """The clock is outside the range the 64-bit time-ordered ids can encode."""


class MetricMismatchError(InfschedError, ValueError):
    """A metric is used with another kind, or other label names, than it was first used with."""


class SchemaVersionError(InfschedError):
    """The database's schema is at another version than this code runs on, or cannot be upgraded."""


class TriggerError(InvalidArgumentError):
    """A recurring trigger is invalid: a cron expression, an interval, a time zone."""


class ScheduleError(InvalidArgumentError):
    """A recurring schedule is invalid, or names what does not exist; the message names the
    schedule and the field."""
