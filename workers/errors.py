"""Errors of the `workers` package.

RadbridgeError (mappings.errors)
└── WorkerError                    workers/: extraction or delivery failed           500, AE 207
    ├── EngineError                the model cannot be loaded or the grammar cannot be built
    │   └── EngineUnavailable      the model server cannot be reached now (refused, 429, 503,
    │                              timeout): retried, the message stays queued                503
    ├── ExtractionError            decoding produced no valid output for a report
    │   └── InvalidModelOutput     a model server's answer is not JSON valid for the schema:
    │                              retried, never accepted
    ├── DeliveryError              a Bundle or ORU could not be delivered (e.g. no target set)
    │   ├── DeliveryRetryable      a passing failure (429, 5xx, timeout): retried     503
    │   │   └── DeliveryConflict   409/412 on a conditional write (read again, retried)  503
    │   └── DeliveryRejected       the receiver refused it for good: dead             502
    ├── SpanError                  workers/context.py: a span outside the text (a bug)
    └── TriggerTableError          a ConText trigger table is malformed (checked on load)
"""

from __future__ import annotations

from mappings.errors import RadbridgeError


class WorkerError(RadbridgeError):
    """A worker step failed."""


class EngineError(WorkerError):
    """The model cannot be loaded, or the schema cannot be compiled to a grammar."""


class EngineUnavailable(EngineError):
    """The model server cannot be reached now (connection refused, timeout, 429, 502-504):
    a passing failure, retried; `retry_after` in seconds when the server gave one."""

    http_status = 503
    issue_code = "transient"

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ExtractionError(WorkerError):
    """Decoding finished without an output that validates against the template's schema."""


class InvalidModelOutput(ExtractionError):
    """A model server answered with text that is not JSON valid against the requested schema
    (it ignored or broke the constraint): retried, never silently accepted."""


class DeliveryError(WorkerError):
    """A Bundle could not be delivered to the FHIR server."""


class DeliveryRetryable(DeliveryError):
    """A passing failure (429, 5xx, timeout, connection refused); `retry_after` in seconds if given."""

    http_status = 503
    issue_code = "transient"

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class DeliveryConflict(DeliveryRetryable):
    """The EHR answered 409/412 to a conditional write (its resource changed since it was
    read): `deliver_report` reads again and retries once, then leaves it to the retry."""


class DeliveryRejected(DeliveryError):
    """The server refused the Bundle for good; `outcome` is its OperationOutcome (may hold PHI: never log it)."""

    http_status = 502

    def __init__(self, message: str, *, status: int, outcome: dict[str, object] | None) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


class TriggerTableError(WorkerError):
    """A ConText trigger table (`workers.context_triggers`) holds a malformed rule: an unknown
    direction or category, an empty token. Raised when `workers.context` loads."""
