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
