"""Errors of the `adapter` package.

RadbridgeError (mappings.errors)
└── AdapterError                   adapter/: I/O at the edges or configuration
    ├── ConfigError                settings are unusable (e.g. production without auth)
    └── InputError                 a CLI input path cannot be read
"""

from __future__ import annotations

from mappings.errors import RadbridgeError


class AdapterError(RadbridgeError):
    """An edge (CLI, store, listener) failed."""


class ConfigError(AdapterError):
    """The settings are unusable; the message says which setting and why."""


class InputError(AdapterError):
    """An input file or folder given on the command line cannot be read."""


class StoreError(AdapterError):
    """The store cannot be opened, or a store operation failed (no content in the message)."""
