"""Errors of the `conformance` package.

RadbridgeError (mappings.errors)
└── ConformanceError               conformance/: a check could not run
    └── SchemaUnavailable          the official FHIR R4 JSON schema file is missing
"""

from __future__ import annotations

from mappings.errors import RadbridgeError


class ConformanceError(RadbridgeError):
    """A conformance tool could not run (not: the input failed a check)."""


class SchemaUnavailable(ConformanceError):
    """The official R4 JSON schema cannot be found or read."""
