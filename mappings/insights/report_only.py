"""The report a no template applies to still gets its Bundle (issue 20 item 1): its
DiagnosticReport (text, conclusion, status, the codes it has) and its insights, under the
pseudo-template `report_only`, which has no variables and so gives no template Observations.

`no_template` stays a recorded fact: the extraction record of such a result holds `no_template`
(why no template applied), the use case still lists the `no_template` entry among its
rejections (the CLI's rejected.jsonl, `radbridge route`), and the store gives the message the
reason "no template" when only such results were kept.
"""

from __future__ import annotations

from mappings.template import Template

REPORT_ONLY = "report_only"
REPORT_ONLY_VERSION = "1"


def report_only_template() -> Template:
    """The pseudo-template of a report no template applies to. Built without validation: a
    real template needs at least one variable, and this one is never routed to or extracted."""
    return Template.model_construct(
        id=REPORT_ONLY,
        version=REPORT_ONLY_VERSION,
        title="No template applies: the report and its insights",
        languages=("en", "nl", "de"),
        variables=(),
    )
