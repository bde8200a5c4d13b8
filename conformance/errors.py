"""Errors of the `conformance` package.

RadbridgeError (mappings.errors)
└── ConformanceError               conformance/: a check could not run
    ├── SchemaUnavailable          the official FHIR R4 JSON schema file is missing
    ├── EvaluationError            `radbridge eval` cannot run
    │   ├── DatasetError           a dataset line is invalid (file:line: what)      400
    │   └── ConverterUnavailable   the converter of a detected dataset format is not installed
    └── ReplayError                conformance/replay.py: a replay target cannot be reached
(HTTP 500 and NAK AE 207 unless a status is given: these run offline, not behind the API.)
"""

from __future__ import annotations

from mappings.errors import RadbridgeError


class ConformanceError(RadbridgeError):
    """A conformance tool could not run (not: the input failed a check)."""


class SchemaUnavailable(ConformanceError):
    """The official R4 JSON schema cannot be found or read."""


class EvaluationError(ConformanceError):
    """An evaluation cannot run (bad options, unreadable dataset)."""


class DatasetError(EvaluationError):
    """An evaluation dataset is invalid; the message starts with `file:line:`."""

    http_status = 400
    issue_code = "invalid"

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


class ConverterUnavailable(EvaluationError):
    """A detected dataset format needs a converter module that does not exist yet."""
