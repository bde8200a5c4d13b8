"""The browser UI served by radbridge itself (issue 13): clinician review and operator console.

`install_ui(app, settings, store)` mounts it under `/ui` (templates and static files ship in
this package; nothing is fetched at run time). `routes.py` composes the page groups
(`signin_views`, `review_views`, `console_views`, `dead_letter_views`: module-level routers
sharing the app's `context.UiContext`); `report_view.py` and `insight_view.py` are the review
page's pure view models; `auth.py` the users and sessions; `identity.py` the patient and exam a
report belongs to, for reviewers.
"""

from adapter.ui.routes import install_ui

__all__ = ["install_ui"]
