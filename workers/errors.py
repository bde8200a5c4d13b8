"""Errors of the `workers` package.

RadbridgeError (mappings.errors)
└── WorkerError                    workers/: extraction or delivery failed
    ├── EngineError                the model cannot be loaded or the grammar cannot be built
    └── ExtractionError            decoding produced no valid output for a report
"""

from __future__ import annotations

from mappings.errors import RadbridgeError


class WorkerError(RadbridgeError):
    """A worker step failed."""


class EngineError(WorkerError):
    """The model cannot be loaded, or the schema cannot be compiled to a grammar."""


class ExtractionError(WorkerError):
    """Decoding finished without an output that validates against the template's schema."""


class DeliveryError(WorkerError):
    """A Bundle could not be delivered to the FHIR server."""


class DeliveryRetryable(DeliveryError):
    """A passing failure (429, 5xx, timeout, connection refused); `retry_after` in seconds if given."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class DeliveryRejected(DeliveryError):
    """The server refused the Bundle for good; `outcome` is its OperationOutcome (may hold PHI: never log it)."""

    def __init__(self, message: str, *, status: int, outcome: dict[str, object] | None) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
