"""RADBRIDGE_FLAGS_HOLD_UNTIL_REVIEW (issue 20 item 3): critical-result Flags go out at once by
default; with the setting on, a Flag reaches neither the FHIR EHR (Medplum's strict router,
tests/helpers/ehr_engine.py) nor the ORU receiver (python-hl7's MLLP server, tests/helpers/oru_receiver.py)
until a reviewer accepts it; a rejected one never goes out unless the destination got it
before (it then gets the retraction); the rest of the report (follow-up, Communication) goes
out as usual and nothing dangles."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from adapter.settings import Settings
from mappings.review import Decision
from tests.helpers.ehr_engine import MedplumEhr, medplum
from tests.helpers.oru_receiver import OruReceiver
from tests.test_ehr_contract import HL7, extracted, settings_for
from tests.test_ehr_insights import ABDOMEN_US, _decided, _ehr_patient, _of
from tests.test_ui_insights_browser import SCROTUM_US
from workers.delivery import deliver_oru_message, deliver_report

__all__ = ["medplum"]  # the fixture


def _hold(medplum: MedplumEhr, on: bool = True) -> Settings:
    return settings_for(medplum, flags_hold_until_review=on)


def test_the_setting_is_off_by_default_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().flags_hold_until_review is False  # type: ignore[call-arg]
    monkeypatch.setenv("RADBRIDGE_FLAGS_HOLD_UNTIL_REVIEW", "true")
    assert Settings().flags_hold_until_review is True  # type: ignore[call-arg]
    monkeypatch.setenv("RADBRIDGE_FLAGS_HOLD_UNTIL_REVIEW", "sometimes")
    with pytest.raises(ValueError, match="flags_hold_until_review"):
        Settings()  # type: ignore[call-arg]


def test_a_held_flag_reaches_the_ehr_only_once_accepted(medplum: MedplumEhr) -> None:
    _ehr_patient(medplum)
    settings = _hold(medplum)
    report, bundle = extracted(ABDOMEN_US, HL7, settings)
    assert len(_of(bundle, "Flag")) == 1
    first = deliver_report(bundle, report, settings, {})
    assert first.sent
    assert medplum.resources("Flag") == []  # held
    assert len(medplum.resources("ServiceRequest")) == 1  # the rest as usual
    assert len(medplum.resources("Communication")) == 1
    assert medplum.dangling() == []  # the extraction Provenance does not name the held Flag
    assert not deliver_report(bundle, report, settings, first.hashes).sent
    accepted = _decided(bundle, {"Flag": Decision.ACCEPT})
    second = deliver_report(accepted, report, settings, first.hashes)
    assert second.sent
    (flag,) = medplum.resources("Flag")
    assert (flag["id"], flag["status"]) == (_of(bundle, "Flag")[0]["id"], "active")
    reviews = [p for p in medplum.resources("Provenance") if "activity" in p]
    assert [p["target"][0]["reference"].split("/")[:2] for p in reviews] == [["Flag", flag["id"]]]
    extraction = [p for p in medplum.resources("Provenance") if "activity" not in p]
    assert any(
        t["reference"].startswith(f"Flag/{flag['id']}") for p in extraction for t in p["target"]
    )  # named once it is there
    assert medplum.dangling() == []
    assert not deliver_report(accepted, report, settings, second.hashes).sent


def test_a_rejected_held_flag_never_reaches_the_ehr(medplum: MedplumEhr) -> None:
    _ehr_patient(medplum)
    settings = _hold(medplum)
    report, bundle = extracted(ABDOMEN_US, HL7, settings)
    first = deliver_report(bundle, report, settings, {})
    rejected = _decided(bundle, {"Flag": Decision.REJECT})
    second = deliver_report(rejected, report, settings, first.hashes)
    assert medplum.resources("Flag") == []
    assert [p for p in medplum.resources("Provenance") if "activity" in p] == []
    assert medplum.dangling() == []
    assert not deliver_report(rejected, report, settings, second.hashes).sent


def test_a_flag_sent_before_the_hold_is_retracted_when_rejected(medplum: MedplumEhr) -> None:
    _ehr_patient(medplum)
    report, bundle = extracted(ABDOMEN_US, HL7, _hold(medplum, on=False))
    first = deliver_report(bundle, report, _hold(medplum, on=False), {})
    assert [f["status"] for f in medplum.resources("Flag")] == ["active"]  # at once by default
    settings = _hold(medplum)
    pending = deliver_report(bundle, report, settings, first.hashes)  # the hold switched on
    assert not pending.sent
    rejected = _decided(bundle, {"Flag": Decision.REJECT})
    assert deliver_report(rejected, report, settings, pending.hashes).sent
    assert [f["status"] for f in medplum.resources("Flag")] == ["entered-in-error"]
    assert medplum.dangling() == []


@pytest.fixture
def receiver() -> Iterator[OruReceiver]:
    server = OruReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def _obx(message: Any) -> dict[str, str]:
    """OBX-3 text -> OBX-11 of the insight OBX the receiver parsed."""
    found = {}
    for segment in message.segments("OBX"):
        name = str(segment[3]).lstrip("^")
        found[name] = str(segment[11])
    return found


def test_a_held_flag_goes_out_as_an_oru_obx_only_once_accepted(receiver: OruReceiver) -> None:
    settings = Settings(stage="rules", oru_target=receiver.target, flags_hold_until_review=True)  # type: ignore[call-arg]
    report, bundle = extracted(ABDOMEN_US, HL7, settings)
    sent = deliver_oru_message(bundle, settings, report, {}).statuses
    first = _obx(receiver.messages[-1])
    assert "Critical result" not in first
    assert "Result communicated" in first and "Follow-up recommendation" in first
    accepted = _decided(bundle, {"Flag": Decision.ACCEPT})
    deliver_oru_message(accepted, settings, report, sent)
    assert _obx(receiver.messages[-1])["Critical result"] == "F"
    rejected = _decided(bundle, {"Flag": Decision.REJECT})
    deliver_oru_message(rejected, settings, report, sent)
    assert "Critical result" not in _obx(receiver.messages[-1])  # never sent: never retracted


def test_an_oru_flag_sent_before_the_hold_is_withdrawn_when_rejected(
    receiver: OruReceiver,
) -> None:
    off = Settings(stage="rules", oru_target=receiver.target)  # type: ignore[call-arg]
    report, bundle = extracted(ABDOMEN_US, HL7, off)
    sent = deliver_oru_message(bundle, off, report, {}).statuses
    assert _obx(receiver.messages[-1])["Critical result"] == "F"  # at once by default
    on = off.model_copy(update={"flags_hold_until_review": True})
    sent = deliver_oru_message(bundle, on, report, sent).statuses
    assert "Critical result" not in _obx(receiver.messages[-1])
    rejected = _decided(bundle, {"Flag": Decision.REJECT})
    deliver_oru_message(rejected, on, report, sent)
    assert _obx(receiver.messages[-1])["Critical result"] == "W"


def test_a_report_whose_only_insight_is_a_held_flag_sends_no_empty_provenance(
    medplum: MedplumEhr,
) -> None:
    """The extraction Provenance of a report with nothing but a critical result targets only
    the Flag: held, it is not sent (a Provenance needs a target); accepted, both go out."""
    _ehr_patient(medplum)
    settings = _hold(medplum)
    only_flag = SCROTUM_US.replace(b"~Recommend follow-up ultrasound in 6 weeks.", b"")
    report, bundle = extracted(only_flag, HL7, settings)
    assert [len(_of(bundle, kind)) for kind in ("Flag", "ServiceRequest", "Observation")] == [
        1, 0, 0]  # fmt: skip
    first = deliver_report(bundle, report, settings, {})
    assert medplum.resources("Flag") == []
    assert all(p.get("target") for p in medplum.resources("Provenance"))
    accepted = _decided(bundle, {"Flag": Decision.ACCEPT})
    deliver_report(accepted, report, settings, first.hashes)
    (flag,) = medplum.resources("Flag")
    extraction = [p for p in medplum.resources("Provenance") if "activity" not in p]
    assert [t["reference"] for p in extraction for t in p["target"]] == [f"Flag/{flag['id']}"]
    assert medplum.dangling() == []


def test_production_refuses_a_hold_no_reviewer_could_release() -> None:
    """Reviews are made in the browser UI: with it off, a held critical result would never go
    out, so production refuses to start; with the UI on, the hold is fine."""
    from adapter.errors import ConfigError

    key = "k" * 40
    with pytest.raises(ConfigError, match="RADBRIDGE_FLAGS_HOLD_UNTIL_REVIEW"):
        Settings(env="production", api_key=key, flags_hold_until_review=True).check_production()  # type: ignore[arg-type,call-arg]
    Settings(env="production", api_key=key).check_production()  # type: ignore[arg-type,call-arg]
    Settings(  # type: ignore[call-arg]
        env="production", api_key=key, flags_hold_until_review=True,  # type: ignore[arg-type]
        ui_users_file="users", ui_session_secret="s" * 40,  # type: ignore[arg-type]
    ).check_production()  # fmt: skip
