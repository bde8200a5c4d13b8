"""The ORU out's insight OBX say each thing once (issue 20): OBX-3 names the kind ("Critical
result"), OBX-5 carries what was found without repeating the kind; read back with python-hl7."""

from __future__ import annotations

from typing import Any

import hl7

from mappings.hl7.oru_out import oru_from_bundle
from mappings.oru_insights import insight_obx
from tests.test_insight_outputs import _results
from tests.test_insights_bundle import ABDOMEN


def _insight_obx(message: bytes) -> dict[str, list[Any]]:
    parsed = hl7.parse(message.decode("utf-8"))
    by_name: dict[str, list[Any]] = {}
    for segment in parsed.segments("OBX"):
        if str(segment[2]) == "ST":
            by_name.setdefault(str(segment[3][0][1]), []).append(segment)
    return by_name


def test_critical_result_obx_does_not_repeat_its_name() -> None:
    [result] = _results("abd-1", ABDOMEN)[:1]
    assert result.bundle is not None
    message = oru_from_bundle(result.bundle, control_id="OUT1")
    by_name = _insight_obx(message)
    [critical] = by_name["Critical result"]
    value = str(critical[5])
    assert value and "critical result" not in value.casefold()
    assert "appendicitis" in value.casefold()
    assert message.decode().casefold().count("critical result") == 1
    # every insight OBX: OBX-5 never starts with its own OBX-3 name
    for name, segments in by_name.items():
        for segment in segments:
            assert not str(segment[5]).casefold().startswith(name.casefold())


def test_value_keeps_a_colon_that_is_not_the_name() -> None:
    flag = {"resourceType": "Flag", "id": "f1", "status": "active",
            "code": {"text": "Critical result: Aortic dissection: type A"}}  # fmt: skip
    other = {"resourceType": "Flag", "id": "f2", "status": "active",
             "code": {"text": "Pneumothorax: tension"}}  # fmt: skip
    bare = {"resourceType": "Flag", "id": "f3", "status": "active",
            "code": {"text": "Critical result:"}}  # fmt: skip
    segments = [s.split("|") for s in insight_obx([flag, other, bare], 0, "", lambda t: t)]
    assert [s[5] for s in segments] == [
        "Aortic dissection: type A",
        "Pneumothorax: tension",
        "Critical result:",
    ]
