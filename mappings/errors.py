"""The radbridge error tree (root) and the errors of the pure `mappings` package.

    RadbridgeError                      root of every error radbridge raises on purpose
    ├── MappingError                    mappings/: a definition or transformation failed
    │   ├── MessageRejected             an inbound message cannot be used (carries an HL7 0357 code)
    │   ├── TemplateError               a template file is malformed (carries file and field)
    │   ├── TerminologyError            a code is not in the verified code table
    │   └── FhirMappingError            a FHIR resource cannot be read or built
    ├── AdapterError                    adapter/ (see adapter/errors.py)
    ├── WorkerError                     workers/ (see workers/errors.py)
    └── ConformanceError                conformance/ (see conformance/errors.py)

Messages never contain report text or patient identifiers.
"""

from __future__ import annotations

from enum import StrEnum


class RadbridgeError(Exception):
    """Root of every error radbridge raises on purpose."""


class MappingError(RadbridgeError):
    """A pure mapping or definition step failed."""


class HL7ErrorCode(StrEnum):
    """HL7 v2 table 0357 (message error condition codes) used in ERR-3."""

    SEGMENT_SEQUENCE_ERROR = "100"
    REQUIRED_FIELD_MISSING = "101"
    DATA_TYPE_ERROR = "102"
    TABLE_VALUE_NOT_FOUND = "103"
    UNSUPPORTED_MESSAGE_TYPE = "200"
    UNSUPPORTED_EVENT_CODE = "201"
    UNSUPPORTED_PROCESSING_ID = "202"
    UNSUPPORTED_VERSION_ID = "203"
    UNKNOWN_KEY_IDENTIFIER = "204"
    DUPLICATE_KEY_IDENTIFIER = "205"
    APPLICATION_RECORD_LOCKED = "206"
    APPLICATION_INTERNAL_ERROR = "207"


class MessageRejected(MappingError):
    """An inbound message (or one report in it) cannot be used.

    `code` is the HL7 table 0357 condition code for the ERR segment, `reason` a short
    machine-readable reason (used as `reason` in rejected.jsonl), and the message text a
    human-readable explanation free of report content and identifiers.
    """

    def __init__(self, code: HL7ErrorCode, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.reason = reason
        self.detail = detail


class TemplateError(MappingError):
    """A template file is malformed; the message names the file and the field."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        super().__init__(f"{source}: {field}: {problem}")
        self.source = source
        self.field = field
        self.problem = problem


class TerminologyError(MappingError):
    """A code is not in the project's verified code table."""


class FhirMappingError(MappingError):
    """A FHIR resource cannot be read into a Report or an output resource cannot be built."""
