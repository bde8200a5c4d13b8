"""The radbridge error tree (root) and the errors of the pure `mappings` package.

    RadbridgeError                      root of every error radbridge raises on purpose
    ├── MappingError                    mappings/: a definition or transformation failed
    │   ├── MessageRejected             an inbound message cannot be used (carries an HL7 0357 code)
    │   │   └── NoReportText            no readable report text (no narrative, PDF only)  422
    │   ├── InternalMappingError        a bug while mapping (carries a correlation id; retried)
    │   ├── TemplateError               a template file is malformed (carries file and field)
    │   │   ├── TemplateProblems        every problem of one or more template files at once
    │   │   ├── UnsupportedTask         an llm_extractinator task radbridge cannot run (extractinator.py)
    │   │   └── UnsafeParserFormat      a task's parser format would run code (extractinator.py)
    │   ├── CriticalListError           the critical-findings list is malformed (insights/critical_list.py)
    │   ├── TerminologyError            a code is not in the verified code table
    │   │   └── TerminologyUnavailable  the installed terminology tables are missing (terminology_tables.py)
    │   ├── FhirMappingError            a FHIR resource cannot be read or built
    │   ├── IdentityRefused             a report cannot be written back to the EHR (ehr.py)  422
    │   │   └── AmbiguousMatch          several EHR resources match one identifier       409
    │   ├── ReviewRefused               a review decision cannot be applied (review.py)  422
    │   │   └── ReviewConflict          the Observation changed since it was loaded      409
    │   └── SearchRefused               a FHIR search that is not run (search_query.py)  400
    │       └── SearchUnsupported       an unsupported parameter, modifier or prefix     400
    ├── AdapterError                    adapter/ (see adapter/errors.py)
    │   ├── ConfigError                 settings are unusable
    │   ├── InputError                  a CLI input path cannot be read                  400
    │   │   └── CheckpointMismatch      app/checkpoint.py: a checkpoint of other options
    │   ├── StoreError                  the store failed                                 503
    │   │   └── StoreRefused            the database refused a row's values              400
    │   ├── MllpError                   adapter/mllp.py
    │   ├── ApiError                    adapter/api/errors.py: an HTTP error with its status
    │   └── UiRefused                   adapter/ui/: a page or form refused              403
    │       └── PasswordsBusy           adapter/ui/passwords.py: the argon2 pool is full 429
    ├── WorkerError                     workers/ (see workers/errors.py)
    │   ├── EngineError                 the model cannot be loaded
    │   │   └── EngineUnavailable       the model server cannot be reached now           503
    │   ├── ExtractionError             no valid output for a report
    │   │   └── InvalidModelOutput      a model server's answer is not valid JSON
    │   ├── DeliveryError               a Bundle or ORU could not be delivered
    │   │   ├── DeliveryRetryable       a passing failure: retried                       503
    │   │   │   └── DeliveryConflict    409/412 on a conditional write                   503
    │   │   └── DeliveryRejected        the receiver refused it for good                 502
    │   ├── SpanError                   workers/context.py
    │   └── TriggerTableError           a ConText trigger table is malformed
    └── ConformanceError                conformance/ (see conformance/errors.py)
        ├── SchemaUnavailable           the FHIR R4 JSON schema is missing
        ├── EvaluationError             `radbridge eval` cannot run
        │   ├── DatasetError            a dataset line is invalid                        400
        │   └── ConverterUnavailable    a dataset format's converter is not installed
        └── ReplayError                 conformance/replay.py

Every class says how it is answered: `hl7_code` (HL7 table 0357, ERR-3 of a NAK or an application
ACK), `http_status` and `issue_code` (the OperationOutcome of the HTTP API); a test
(tests/test_error_map.py) checks each class has them and that this drawing is the class tree:
every class, each under its parent. Messages never contain report text or
patient identifiers.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from typing import ClassVar

log = logging.getLogger("radbridge.errors")


class HL7ErrorCode(StrEnum):
    """HL7 v2 table 0357 (message error condition codes) used in ERR-3."""

    SEGMENT_SEQUENCE_ERROR = "100"
    REQUIRED_FIELD_MISSING = "101"
    DATA_TYPE_ERROR = "102"
    TABLE_VALUE_NOT_FOUND = "103"
    VALUE_TOO_LONG = "104"  # added in v2.7
    UNSUPPORTED_MESSAGE_TYPE = "200"
    UNSUPPORTED_EVENT_CODE = "201"
    UNSUPPORTED_PROCESSING_ID = "202"
    UNSUPPORTED_VERSION_ID = "203"
    UNKNOWN_KEY_IDENTIFIER = "204"
    DUPLICATE_KEY_IDENTIFIER = "205"
    APPLICATION_RECORD_LOCKED = "206"
    APPLICATION_INTERNAL_ERROR = "207"


class RadbridgeError(Exception):
    """Root of every error radbridge raises on purpose."""

    hl7_code: ClassVar[HL7ErrorCode] = HL7ErrorCode.APPLICATION_INTERNAL_ERROR
    http_status: ClassVar[int] = 500
    issue_code: ClassVar[str] = "exception"


class MappingError(RadbridgeError):
    """A pure mapping or definition step failed."""


def traceback_frames(exc: BaseException) -> str:
    """`exc`'s traceback as file, line and function only, one frame a line: no exception
    message and no source lines (either may quote report values)."""
    return "\n".join(
        f"  {frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
    )


def log_unexpected(
    logger: logging.Logger, where: str, exc: BaseException, correlation_id: str | None = None
) -> str:
    """The one way an edge logs an unexpected exception: once, at ERROR, with a correlation id,
    the exception's type and its frames (`traceback_frames`), never its message. Returns the
    correlation id (drawn unless given) for the answer (NAK text, OperationOutcome, CLI line)."""
    correlation = correlation_id or uuid.uuid4().hex
    logger.error(
        "internal error in %s correlation=%s type=%s\n%s",
        where,
        correlation,
        type(exc).__name__,
        traceback_frames(exc),
    )
    return correlation


class InternalMappingError(MappingError):
    """A mapping step failed in a way no table lists: a bug, not bad input. The message holds only
    the exception type and a correlation id; the traceback (no values) is in the log under it."""

    def __init__(self, where: str, exc: BaseException) -> None:
        self.correlation_id = log_unexpected(log, where, exc)
        super().__init__(
            f"internal error in {where} ({type(exc).__name__}, correlation id {self.correlation_id})"
        )


RejectionFactory = Callable[[BaseException], "MessageRejected"]


@contextmanager
def map_exceptions(
    mapping: Mapping[type[BaseException], RejectionFactory], where: str
) -> Iterator[None]:
    """httpx's pattern: exceptions the table lists become the rejection it builds; a
    `RadbridgeError` passes unchanged; anything else is an `InternalMappingError` (logged with a
    correlation id, no exception text: it may hold report content)."""
    try:
        yield
    except RadbridgeError:
        raise
    except Exception as exc:
        for kind, build in mapping.items():
            if isinstance(exc, kind):
                raise build(exc) from None
        raise InternalMappingError(where, exc) from None


class MessageRejected(MappingError):
    """An inbound message (or one report in it) cannot be used.

    `code` is the HL7 table 0357 condition code for the ERR segment, `reason` a short
    machine-readable reason (used as `reason` in rejected.jsonl), and the message text a
    human-readable explanation free of report content and identifiers.
    """

    http_status = 400
    issue_code = "invalid"

    def __init__(self, code: HL7ErrorCode, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.reason = reason
        self.detail = detail


class NoReportText(MessageRejected):
    """A well-formed message holds no report text radbridge can read (no narrative, or only a
    PDF): understood but unprocessable, 422 over HTTP."""

    http_status = 422


class TemplateError(MappingError):
    """A template file is malformed; the message names the file and the field."""

    http_status = 422
    issue_code = "invalid"

    def __init__(self, source: str, field: str, problem: str) -> None:
        super().__init__(f"{source}: {field}: {problem}")
        self.source = source
        self.field = field
        self.problem = problem


class TemplateProblems(TemplateError):
    """Every problem found in template files at once; `problems` holds each (file, field,
    problem), the first gives `source`, `field` and `problem`."""

    def __init__(self, problems: list[TemplateError]) -> None:
        first = problems[0]
        super().__init__(first.source, first.field, first.problem)
        self.problems = tuple(problems)
        if len(problems) > 1:
            more = "; ".join(f"{p.source}: {p.field}: {p.problem}" for p in problems[1:])
            self.args = (f"{first} (and {len(problems) - 1} more: {more})",)


class TerminologyError(MappingError):
    """A code is not in the project's verified code table."""

    issue_code = "code-invalid"


class TerminologyUnavailable(TerminologyError):
    """The terminology tables radbridge installs (scripts/install-reference-data.sh) are missing:
    an installation problem, not bad input."""

    issue_code = "exception"


class FhirMappingError(MappingError):
    """A FHIR resource cannot be read into a Report or an output resource cannot be built."""

    http_status = 400
    issue_code = "structure"


class IdentityRefused(MappingError):
    """A report cannot be written back to the EHR as the identity policy stands (no identifier
    with a system, no Patient at the EHR): the delivery to that destination is refused with
    this reason (it names fields and settings, never an identifier's value)."""

    http_status = 422
    issue_code = "business-rule"


class AmbiguousMatch(IdentityRefused):
    """Several resources at the EHR match one identifier: radbridge never picks one."""

    http_status = 409
    issue_code = "multiple-matches"
