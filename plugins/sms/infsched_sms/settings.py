"""Reading ``[plugins.sms]``: each wrong or missing key is one ConfigError naming it."""

from __future__ import annotations

import math
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

from infsched.errors import ConfigError

_MISSING = object()


class Settings:
    """Typed access to the plugin's config section."""

    def __init__(self, section: Mapping[str, Any], plugin: str = "sms") -> None:
        self.section = section
        self.plugin = plugin

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"plugin {self.plugin}: [plugins.{self.plugin}] {key} {problem}")

    def _get(self, key: str, default: object) -> object:
        value = self.section.get(key, default)
        if value is _MISSING:
            raise self.error(key, "is missing")
        return value

    def text(self, key: str, default: object = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"is {value!r}; expected a non-empty string")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.section.get(key) in (None, "") else self.text(key)

    def integer(self, key: str, default: int, *, low: int = 1, high: int = 2**31) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, f"is {value!r}; expected a whole number from {low} to {high}")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(key, f"is {value!r}; expected a number of seconds > 0")
        return float(value)

    def optional_integer(self, key: str, *, low: int = 1, high: int = 2**31) -> int | None:
        return None if key not in self.section else self.integer(key, low, low=low, high=high)

    def optional_rate(self, key: str, unit: str) -> float | None:
        """A positive, finite number of `unit` per second, or None when the key is absent."""
        if key not in self.section:
            return None
        value = self.section[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise self.error(key, f"is {value!r}; expected a number of {unit} per second > 0")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"is {value!r}; expected true or false")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._get(key, default)
        if value not in choices:
            raise self.error(key, f"is {value!r}; expected one of {', '.join(choices)}")
        return str(value)

    def table(self, key: str, default: Mapping[str, Any]) -> Mapping[str, Any]:
        value = self._get(key, default)
        if not isinstance(value, Mapping):
            raise self.error(key, f"is {value!r}; expected a table")
        return value

    def http_url(self, key: str) -> str:
        value = self.text(key)
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(key, f"is {value!r}; expected an http:// or https:// URL")
        return value

    def reachable(self, key: str, host: str, port: int, timeout: float) -> None:
        """Refuse to start when nothing accepts TCP connections at host:port."""
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise self.error(
                key, f"names {host}:{port}, which cannot be reached ({exc}); is the gateway up?"
            ) from None


def url_address(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname or "", parts.port or default
