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
