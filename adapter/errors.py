"""Errors of the `adapter` package.

RadbridgeError (mappings.errors)
└── AdapterError                   adapter/: I/O at the edges or configuration      500, NAK AE 207
    ├── ConfigError                settings are unusable (e.g. production without auth)
    ├── InputError                 a CLI input path cannot be read                  400
    │   └── CheckpointMismatch     app/checkpoint.py: a checkpoint of other options  400
    ├── StoreError                 the store failed (no content in the message)     503, NAK AE 207
    │   └── StoreRefused           the database refused a row's values: permanent   400, NAK AR 207
    ├── MllpError                  adapter/mllp.py: an MLLP peer or frame failed
    ├── ApiError                   adapter/api/errors.py: an HTTP error, its status chosen where raised
    └── UiRefused                  adapter/ui/: a page or form refused (role, CSRF)  its status, 403
        └── PasswordsBusy          adapter/ui/passwords.py: the argon2 pool is full  429
"""

from __future__ import annotations

from mappings.errors import RadbridgeError


class AdapterError(RadbridgeError):
    """An edge (CLI, store, listener) failed."""


class ConfigError(AdapterError):
    """The settings are unusable; the message says which setting and why (`problems`: each
    problem on its own, when there are several)."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class InputError(AdapterError):
    """An input file or folder given on the command line cannot be read."""

    http_status = 400
    issue_code = "not-found"


class StoreError(AdapterError):
    """The store cannot be opened, or a store operation failed (no content in the message)."""

    http_status = 503
    issue_code = "transient"


class StoreRefused(StoreError):
    """The database refused a row's values (a DataError): resending the same message fails
    again, so it is rejected (AR / 400), never answered as transient."""

    http_status = 400
    issue_code = "invalid"


class UiRefused(AdapterError):
    """A UI page or form refused (missing role, bad CSRF token, bad input); answered as an
    error page with `status`. The text is shown to the user: never report content."""

    http_status = 403
    issue_code = "forbidden"

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
