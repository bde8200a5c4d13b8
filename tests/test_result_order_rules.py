"""The result-order rules on their own (`mappings.result_order`, pure): which DiagnosticReport
may replace the stored one, and what a superseding result retires. The same rules on real
stores, the pull API and a FHIR server are `tests/test_result_order.py`."""

from __future__ import annotations

from typing import Any

import pytest

from mappings.result_order import RETIRED_STATUSES, as_retired, stale_reason

EARLY, LATE = "2026-11-01T08:00:00+00:00", "2026-11-01T08:45:00+00:00"


def report(status: str, effective: str | None = EARLY) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "DiagnosticReport", "id": "r", "status": status}
    if effective is not None:
        resource["effectiveDateTime"] = effective
    return resource


@pytest.mark.parametrize(
    ("incoming", "stored", "reason"),
    [
        # a preliminary never replaces a final or a correction, whatever its time
        (report("preliminary", LATE), report("final"), "superseded: a final result is stored"),
        (report("partial", LATE), report("amended"), "superseded: a amended result is stored"),
        # a final supersedes a preliminary, a correction supersedes both
        (report("final", EARLY), report("preliminary", LATE), None),
        (report("corrected", EARLY), report("final", LATE), None),
        (report("appended", EARLY), report("preliminary", LATE), None),
        # the same rank: the later observation time wins, a tie the later arrival
        (report("final", EARLY), report("final", LATE), "superseded: a later result is stored"),
        (report("preliminary", LATE), report("preliminary", EARLY), None),
        (report("final", EARLY), report("final", EARLY), None),
        # a final after a correction: only with a later observation time
        (
            report("final", EARLY),
            report("corrected", EARLY),
            "superseded: a corrected result is stored",
        ),
        (report("final", LATE), report("corrected", EARLY), None),
        # an unknown time never makes a result older
        (report("final", None), report("final", LATE), None),
        (report("final", "not a time"), report("final", LATE), None),
        # a naive time is read as UTC
        (
            report("final", "2026-11-01T08:00:00"),
            report("final", LATE),
            "superseded: a later result is stored",
        ),
    ],
)
def test_which_result_may_replace_the_stored_one(
    incoming: dict[str, Any], stored: dict[str, Any], reason: str | None
) -> None:
    assert stale_reason(incoming, stored) == reason


def test_a_retired_resource_is_entered_in_error_and_a_retired_one_stays_as_it_is() -> None:
    observation = {"resourceType": "Observation", "id": "o", "status": "preliminary"}
    assert as_retired(observation) == {**observation, "status": "entered-in-error"}
    assert observation["status"] == "preliminary"  # the stored body is not changed
    for status in RETIRED_STATUSES:
        flag = {"resourceType": "Flag", "id": "f", "status": status}
        assert as_retired(flag) is flag
