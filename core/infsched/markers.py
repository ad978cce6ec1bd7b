"""pluggy's markers for the ``infsched`` project: `hookimpl` and `hookspec`.

A value any layer may use: the built-in plugins (repository backends, metrics
sinks) mark their hook implementations with `hookimpl` without importing the
hook specifications, which name the types of the layers above them.
"""

from __future__ import annotations

import pluggy

PROJECT = "infsched"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
