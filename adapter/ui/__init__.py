"""The browser UI served by radbridge itself (issue 13): clinician review and operator console.

`install_ui(app, settings, store)` mounts it under `/ui` (templates and static files ship in
this package; nothing is fetched at run time). See `adapter/ui/routes.py`, `auth.py` and
`identity.py` (the patient and exam a report belongs to, for reviewers).
"""

from adapter.ui.routes import install_ui

__all__ = ["install_ui"]
