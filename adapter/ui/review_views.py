"""The reviewer's pages: `/ui/review` (the worklist: patient, MRN, accession, exam, exam date;
flagged first) and `/ui/reports/{id}` (patient banner, report text with `<mark data-evidence>`
spans kept in view beside the values, per Observation Accept / Correct / Reject / Undo, Accept
all; the report's insights (follow-ups, critical results, communications, mismatches) with
their evidence and Accept / Reject / Undo). Every decision names the reviewer and is delivered like
the report."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from adapter.errors import UiRefused
from adapter.reviews import (
    earlier_versions,
    message_of_report,
    report_insights,
    report_observations,
    save_review,
    undoable,
    worklist,
)
from adapter.ui.auth import User
from adapter.ui.context import DIGITS, UiContext, day, resource_id, ui_of, whole_number
from adapter.ui.insight_view import evidence_spans, insight_view
from adapter.ui.report_view import label, observation_view, segments
from mappings.errors import MappingError, MessageRejected, RadbridgeError
from mappings.fhir_out import diagnostic_report_id
from mappings.review import (
    INSIGHT_REVIEWS,
    Correction,
    Decision,
    Reviewer,
    ReviewRefused,
    ReviewResult,
    review,
    review_insight,
    template_of,
)

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/review", response_class=HTMLResponse)
async def review_list(
    request: Request, template: str = "", since: str = "", until: str = ""
) -> Response:
    ui = ui_of(request)
    user = ui.signed_in(request, "reviewer")
    if isinstance(user, RedirectResponse):
        return user
    start, end = day(since, "from"), day(until, "to")
    items = worklist(
        ui.store,
        template=template or None,
        since=start,
        until=end + timedelta(days=1) if end else None,
    )
    return ui.page(
        request,
        "worklist.html",
        user,
        items=items,
        who={item.report_id: ui.identities.of(item.report_id) for item in items},
        templates=sorted(ui.templates()),
        template=template,
        since=since,
        until=until,
    )


def report_text(ui: UiContext, report_id: str) -> str | None:
    """The normalised report text the evidence offsets point into (re-read from the stored
    message), or None when the message is not in the store."""
    from mappings.inbound import parse_message

    store, settings = ui.store, ui.settings
    message_id = message_of_report(store, report_id)
    if message_id is None:
        return None
    try:
        reports = parse_message(
            store.raw(message_id),
            store.content_type(message_id),
            default_charset=settings.default_charset,
            default_language=settings.default_language,
        )
    except (MessageRejected, RadbridgeError):
        return None
    for report in reports:
        if diagnostic_report_id(report) == report_id or report.fhir_resource_id == report_id:
            return report.text
    return None


@router.get("/reports/{report_id}", response_class=HTMLResponse)
async def report_page(request: Request, report_id: str, done: str = "") -> Response:
    ui = ui_of(request)
    user = ui.signed_in(request, "reviewer")
    if isinstance(user, RedirectResponse):
        return user
    report = ui.store.get_resource("DiagnosticReport", resource_id(report_id, "report"))
    if report is None:
        raise UiRefused(404, "No such report.")
    stored = report_observations(ui.store, report_id)
    can_undo = undoable(ui.store, stored)
    views = [observation_view(o, ui.templates(), str(o.body["id"]) in can_undo) for o in stored]
    insights = report_insights(ui.store, report_id)
    text = report_text(ui, report_id)
    spans = evidence_spans([o.body for o in stored] + [i.body for i in insights])
    return ui.page(
        request,
        "report.html",
        user,
        report=report,
        report_id=report_id,
        who=ui.identities.of(report_id),
        title=label(report.get("code")) or "report",
        segments=segments(text, spans) if text is not None else None,
        observations=views,
        waiting=[v for v in views if v.status == "preliminary"],
        insights=[insight_view(i) for i in insights],
        done=done,
    )


def decide(
    ui: UiContext,
    user: User,
    report_id: str,
    observation_id: str,
    data: dict[str, str],
    decision: Decision,
) -> str:
    """Apply and save one decision on an Observation of the report, and deliver its Bundle."""
    resource_id(report_id, "report")
    resource_id(observation_id, "value in this report")
    stored = {str(o.body["id"]): o for o in report_observations(ui.store, report_id)}
    current = stored.get(observation_id)
    if current is None:
        raise UiRefused(404, "That value is not part of this report.")
    version = _form_version(data)
    ids = template_of(current.body)
    template = ui.templates().get(ids[0]) if ids else None
    correction = None
    previous = None
    if decision is Decision.UNDO:  # the version the decision was made on comes back
        previous = earlier_versions(ui.store, [(observation_id, current.version - 1)]).get(
            observation_id
        )
    if decision is Decision.CORRECT:
        correction = Correction(
            status=data.get("status") or None,
            value=data.get("value") or None,
            location=data.get("location") if "location" in data else None,
        )
    if version != current.version:
        raise UiRefused(
            409,
            f"This value changed since the page was loaded (now version {current.version}, "
            f"your decision was made on version {version}). Nothing was changed: reload the "
            "page and decide again.",
        )
    try:
        result = review(
            current.body,
            template,
            decision,
            Reviewer(user.name),
            new_version=version + 1,
            correction=correction,
            report=f"DiagnosticReport/{report_id}",
            previous=previous,
        )
    except ReviewRefused as exc:
        raise UiRefused(exc.http_status, f"{exc} Nothing was changed.") from None
    except MappingError as exc:
        raise UiRefused(422, f"The decision cannot be applied: {exc}") from None
    return _save_and_deliver(ui, user, result, version, decision)


def _save_and_deliver(
    ui: UiContext, user: User, result: ReviewResult, version: int, decision: Decision
) -> str:
    """Store a decision made on `version` and send the report's Bundle to its destinations."""
    try:
        bundle_id = save_review(
            ui.store,
            result,
            expected_version=version,
            reviewer=user.name,
            decision=decision.value,
        )
    except ReviewRefused as exc:
        raise UiRefused(exc.http_status, f"{exc} Nothing was changed.") from None
    except MappingError as exc:
        raise UiRefused(422, f"The decision cannot be applied: {exc}") from None
    ui.dispatch("deliver", bundle_id)
    return bundle_id


def _form_version(data: dict[str, str]) -> int:
    """The version the decision was made on (the form's hidden field)."""
    raw_version = data.get("version", "")
    if not DIGITS.match(raw_version):
        raise UiRefused(400, "The form does not say which version the decision was made on.")
    return whole_number(raw_version, "version")


def decide_insight(
    ui: UiContext,
    user: User,
    report_id: str,
    insight: tuple[str, str],
    data: dict[str, str],
    decision: Decision,
) -> str:
    """Accept or reject one insight (`(resource type, id)`) of the report, or undo its
    decision, and deliver."""
    resource_type, insight_id = insight
    if resource_type not in INSIGHT_REVIEWS:
        raise UiRefused(404, "No such kind of insight.")
    resource_id(report_id, "report")
    resource_id(insight_id, "insight in this report")
    stored = {
        (str(i.body["resourceType"]), str(i.body["id"])): i
        for i in report_insights(ui.store, report_id)
    }
    current = stored.get(insight)
    if current is None:
        raise UiRefused(404, "That insight is not part of this report.")
    version = _form_version(data)
    if version != current.version:
        raise UiRefused(
            409,
            f"This insight changed since the page was loaded (now version {current.version}, "
            f"your decision was made on version {version}). Nothing was changed: reload the "
            "page and decide again.",
        )
    try:
        result = review_insight(
            current.body,
            decision,
            Reviewer(user.name),
            new_version=version + 1,
            decided=current.decided,
            report=f"DiagnosticReport/{report_id}",
            previous=current.previous if decision is Decision.UNDO else None,
        )
    except ReviewRefused as exc:
        raise UiRefused(exc.http_status, f"{exc} Nothing was changed.") from None
    return _save_and_deliver(ui, user, result, version, decision)


@router.post("/reports/{report_id}/observations/{observation_id}")
async def decide_one(request: Request, report_id: str, observation_id: str) -> Response:
    ui = ui_of(request)
    found = await ui.posted(request, "reviewer")
    if isinstance(found, RedirectResponse):
        return found
    user, data = found
    try:
        decision = Decision(data.get("decision", ""))
    except ValueError:
        raise UiRefused(400, "Choose Accept, Correct, Reject or Undo.") from None
    decide(ui, user, report_id, observation_id, data, decision)
    return RedirectResponse(
        f"/ui/reports/{report_id}?done={decision.value}#obs-{observation_id}",
        status_code=303,
    )


@router.post("/reports/{report_id}/insights/{resource_type}/{insight_id}")
async def decide_one_insight(
    request: Request, report_id: str, resource_type: str, insight_id: str
) -> Response:
    ui = ui_of(request)
    found = await ui.posted(request, "reviewer")
    if isinstance(found, RedirectResponse):
        return found
    user, data = found
    decision = {
        "accept": Decision.ACCEPT,
        "reject": Decision.REJECT,
        "undo": Decision.UNDO,
    }.get(data.get("decision", ""))
    if decision is None:
        raise UiRefused(400, "Choose Accept, Reject or Undo.")
    decide_insight(ui, user, report_id, (resource_type, insight_id), data, decision)
    return RedirectResponse(
        f"/ui/reports/{report_id}?done={decision.value}#insight-{insight_id}",
        status_code=303,
    )


@router.post("/reports/{report_id}/accept-all")
async def accept_all(request: Request, report_id: str) -> Response:
    ui = ui_of(request)
    found = await ui.posted(request, "reviewer")
    if isinstance(found, RedirectResponse):
        return found
    user, data = found
    waiting = [
        o
        for o in report_observations(ui.store, resource_id(report_id, "report"))
        if o.body.get("status") == "preliminary"
    ]
    for o in waiting:  # each carries the version shown on the page
        oid = str(o.body["id"])
        if f"v_{oid}" not in data:
            continue
        decide(ui, user, report_id, oid, {"version": data[f"v_{oid}"]}, Decision.ACCEPT)
    return RedirectResponse(f"/ui/reports/{report_id}?done=accept-all", status_code=303)
