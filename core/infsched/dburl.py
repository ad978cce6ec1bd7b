"""Database URLs: parsed, checked, and never printed with their password.

Which URLs are accepted is not known here: each dialect (infsched.dialects,
or one a plugin registers) tells `accept_scheme` how its URLs are written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from infsched.errors import ConfigError

DEFAULT_SQLITE_URL = "sqlite:///./infsched.db"


@attrs.frozen
class UrlScheme:
    """How one database's URLs are written: a row of the driver table a dialect gives."""

    #: The dialect's name (`Dialect.name`), which a URL of this scheme selects.
    dialect: str
    #: The database's name for people (``MySQL/MariaDB``).
    title: str
    #: The driver names (``mysql``, ``mysql+pymysql``, …) a URL may start with.
    drivers: frozenset[str]
    #: The one driver a URL of this scheme is connected with (the one we build and test).
    driver: str
    #: True: a server, so a host and a database are required; False: a file, no host.
    server: bool
    #: Shown in messages for a server URL without a port.
    default_port: int | None
    #: An example URL, for messages.
    example: str


#: Every scheme's drivers, as the dialects gave them: {driver name: scheme}.
_SCHEMES: dict[str, UrlScheme] = {}


def accept_scheme(scheme: UrlScheme) -> None:
    """Accept URLs of `scheme` from now on; called for each registered dialect.

    A driver name another scheme has already keeps that one.
    """
    for driver in sorted(scheme.drivers | {scheme.driver}):
        _SCHEMES.setdefault(driver, scheme)


def url_schemes() -> Mapping[str, UrlScheme]:
    """The accepted driver names and their schemes."""
    return dict(_SCHEMES)


def _examples() -> str:
    """One example URL of each known database, for messages."""
    return " or ".join(sorted({s.example for s in _SCHEMES.values()})) or "none is known"


def _unsupported(driver: str, shown: str) -> ConfigError:
    schemes = {s.dialect: s for s in _SCHEMES.values()}
    known = "; ".join(
        f"{name}: {', '.join(sorted(s.drivers))} (e.g. {s.example})"
        for name, s in sorted(schemes.items())
    )
    return ConfigError(
        f"database_url: unsupported database {driver!r} in {shown}; "
        f"the known ones are {known or 'none'}"
    )


def _parse(raw: str | URL) -> URL:
    if isinstance(raw, URL):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(
            f"database_url: an empty value is not a database URL; use e.g. {_examples()}"
        )
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # The raw text may hold a password, so it is not echoed back.
        raise ConfigError(
            "database_url: malformed URL; expected dialect+driver://user:pass@host:port/db "
            f"or a file's dialect:///PATH (e.g. {_examples()})"
        ) from None
    return url


@attrs.frozen(order=True)
class Endpoint:
    """Where one member of a database answers: a host and a port (None: the default port)."""

    host: str
    port: int | None

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


@attrs.frozen(repr=False)
class DatabaseUrl:
    """A validated database URL.

    `str()` and `repr()` hide the password; `sqlalchemy_url` keeps it for
    connecting and is the only way to reach it.

    A database served by several members (a Galera cluster) has one
    `endpoint` per member, in the order a node tries them; `sqlalchemy_url`
    is the first member's.  `members` makes one from each member's URL.
    """

    sqlalchemy_url: URL = attrs.field(converter=_parse)
    #: The members' hosts and ports; () for a file, else the URL's own first.
    endpoints: tuple[Endpoint, ...] = attrs.field(default=(), kw_only=True)
    #: How URLs of this database are written; it names the dialect that serves it.
    scheme: UrlScheme = attrs.field(init=False)

    @classmethod
    def members(cls, raws: Sequence[str | URL | DatabaseUrl]) -> DatabaseUrl:
        """One database reached through several members' URLs, which differ only in host:port."""
        if isinstance(raws, str) or not raws:
            raise ConfigError(
                "database_url: a list of members needs at least one URL, "
                "e.g. ['mysql://u@db1:3306/jobs', 'mysql://u@db2:3306/jobs']"
            )
        urls = [r if isinstance(r, DatabaseUrl) else DatabaseUrl(r) for r in raws]
        first = urls[0]
        if not first.scheme.server:
            raise ConfigError(f"database_url: {first} is a file; only a server has members")
        for other in urls[1:]:
            theirs = other.sqlalchemy_url.set(host=first.sqlalchemy_url.host, port=first.port)
            if theirs != first.sqlalchemy_url:
                raise ConfigError(
                    f"database_url: the members {first} and {other} differ in more than "
                    "host and port; every member of one database has the same user, "
                    "password, database and options"
                )
        endpoints: list[Endpoint] = []
        for url in urls:
            for endpoint in url.endpoints:
                if endpoint in endpoints:
                    raise ConfigError(f"database_url: member {endpoint} is listed twice")
                endpoints.append(endpoint)
        return cls(first.sqlalchemy_url, endpoints=tuple(endpoints))

    def __attrs_post_init__(self) -> None:
        url = self.sqlalchemy_url
        scheme = _SCHEMES.get(url.drivername)
        if scheme is None:
            raise _unsupported(url.drivername, str(self))
        object.__setattr__(self, "scheme", scheme)
        if scheme.server:
            if not url.host:
                raise ConfigError(f"database_url: {self} names no host")
            if "@" in url.host:
                # `user:pa@ss@host` splits the password at its first '@': the rest would
                # be shown as part of the host, so nothing of the URL is echoed.
                raise ConfigError(
                    "database_url: the host contains '@'; write an '@' inside the password "
                    f"as %40 (e.g. {scheme.driver}://user:pa%40ss@host:{scheme.default_port}/db)"
                )
            if url.port is not None and not 0 < url.port < 65536:
                raise ConfigError(f"database_url: port {url.port} in {self} is not 1-65535")
            if not url.database:
                raise ConfigError(f"database_url: {self} names no database (add /DBNAME)")
        elif url.host:
            raise ConfigError(
                f"database_url: {self} has a host; {scheme.title} URLs are {scheme.example}"
            )
        # The one driver of the scheme that we ship and test (`mysql://` means PyMySQL).
        object.__setattr__(self, "sqlalchemy_url", url.set(drivername=scheme.driver))
        own = Endpoint(url.host, url.port) if scheme.server and url.host else None
        if own is None:
            endpoints: tuple[Endpoint, ...] = ()
        elif not self.endpoints or self.endpoints[0] != own:
            endpoints = (own, *(e for e in self.endpoints if e != own))
        else:
            endpoints = self.endpoints
        object.__setattr__(self, "endpoints", endpoints)

    @property
    def port(self) -> int | None:
        return self.sqlalchemy_url.port

    @property
    def database(self) -> str | None:
        return self.sqlalchemy_url.database

    @property
    def where(self) -> str:
        """Where the database is, for error messages: host:port or the SQLite file."""
        url = self.sqlalchemy_url
        if not self.scheme.server:
            return url.database or ":memory:"
        return ", ".join(self._shown(e) for e in self.endpoints)

    def _shown(self, endpoint: Endpoint) -> str:
        port = endpoint.port or self.scheme.default_port
        return endpoint.host if port is None else f"{endpoint.host}:{port}"

    def member_urls(self) -> list[URL]:
        """Each member's own URL, in order (the URL itself for one server or a file)."""
        if len(self.endpoints) <= 1:
            return [self.sqlalchemy_url]
        return [self.sqlalchemy_url.set(host=e.host, port=e.port) for e in self.endpoints]

    def with_database(self, name: str) -> DatabaseUrl:
        return DatabaseUrl(self.sqlalchemy_url.set(database=name), endpoints=self.endpoints)

    def redacted(self) -> str:
        shown = self.sqlalchemy_url.render_as_string(hide_password=True)
        others = len(self.endpoints) - 1
        return shown if others <= 0 else f"{shown} (+{others} more members)"

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.redacted()!r})"
