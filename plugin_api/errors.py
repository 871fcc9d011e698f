"""Exceptions shared by the kernel and plugins.

Every error a user can cause (bad file, bad key, missing plugin) is a
:class:`RefinekitError`; the CLI prints its message (no traceback) and exits
with status 2.  Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RefinekitError(Exception):
    """A user-facing error: the message names the file/key and what was expected."""


class ConfigError(RefinekitError):
    """A configuration value is unknown, of the wrong type, or out of range.

    ``path`` is the dotted key path (e.g. ``terms.ls.weight``) when known.
    """

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(f"config key '{path}': {message}" if path else message)


class InputError(RefinekitError):
    """An input file is missing, unreadable or lacks what is needed."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class PluginError(RefinekitError):
    """A plugin is missing, duplicated, or built for an incompatible API."""
