"""workers/evidence.py and the checks of workers/pipeline.py around the engine.

The downgrade tests build a `Generation` by hand: a unit test of the code around the engine
(the real engine runs in tests/test_engine.py)."""

from __future__ import annotations

from mappings.report import FindingStatus, Report
from mappings.template import VariableAnswer, get_template
from workers.engine import Generation, TokenStep
from workers.evidence import is_meaningful, locate_quote
from workers.pipeline import finding_value, status_confidences

TEXT = "FINDINGS:\nSmall right  pleural\neffusion. No pneumothorax.\nGröße ±2 cm; 우측 폐 consolidation."
REPORT = Report(source_format="hl7v2", report_id="r1", text=TEXT)


def test_locate_quote_normalises_case_and_whitespace() -> None:
    span = locate_quote(TEXT, "small right pleural effusion")
    assert span is not None
    assert TEXT[span[0] : span[1]] == "Small right  pleural\neffusion"


def test_locate_quote_unicode_offsets_are_code_points() -> None:
    span = locate_quote(TEXT, "größe ±2 cm")
    assert span is not None and TEXT[span[0] : span[1]] == "Größe ±2 cm"
    span = locate_quote(TEXT, "우측 폐 consolidation")
    assert span is not None and TEXT[span[0] : span[1]] == "우측 폐 consolidation"


def test_locate_quote_first_occurrence_and_missing() -> None:
    text = "no effusion. later: no effusion."
    assert locate_quote(text, "No effusion") == (0, 11)
    assert locate_quote(text, "large effusion") is None
    assert locate_quote(text, "   ") is None


def test_meaningful_quotes() -> None:
    assert not is_meaningful("no")
    assert not is_meaningful("Geen")
    assert not is_meaningful("normal")
    assert is_meaningful("No pneumothorax")
    assert is_meaningful("Kein Erguss")


def _value(answer: VariableAnswer, variable: str = "pleural_effusion") -> object:
    return finding_value(REPORT, get_template("chest_findings"), variable, answer, 0.8)


def test_found_quote_is_kept_with_offsets() -> None:
    value = _value(
        VariableAnswer(
            evidence="small right pleural effusion",
            status=FindingStatus.PRESENT,
            locations=["right_lung"],
        )
    )
    assert value.status is FindingStatus.PRESENT  # type: ignore[attr-defined]
    assert value.evidence.verified and value.confidence == 0.8  # type: ignore[attr-defined]
    assert value.locations == ("right_lung",)  # type: ignore[attr-defined]


def test_quote_not_found_downgrades() -> None:
    value = _value(
        VariableAnswer(evidence="large left effusion", status=FindingStatus.PRESENT, locations=None)
    )
    assert value.status is FindingStatus.UNCERTAIN  # type: ignore[attr-defined]
    assert value.flags == ("evidence_not_found",)  # type: ignore[attr-defined]
    assert value.confidence == 0.4  # type: ignore[attr-defined]
    assert not value.evidence.verified  # type: ignore[attr-defined]


def test_missing_or_trivial_quote_downgrades() -> None:
    missing = _value(
        VariableAnswer(evidence=None, status=FindingStatus.ABSENT, locations=None), "pneumothorax"
    )
    assert (missing.status, missing.flags) == (FindingStatus.UNCERTAIN, ("evidence_missing",))  # type: ignore[attr-defined]
    trivial = _value(
        VariableAnswer(evidence="No", status=FindingStatus.ABSENT, locations=None), "pneumothorax"
    )
    assert (trivial.status, trivial.flags) == (FindingStatus.UNCERTAIN, ("evidence_too_short",))  # type: ignore[attr-defined]


def test_not_mentioned_needs_no_evidence_and_unknown_locations_dropped() -> None:
    value = _value(
        VariableAnswer(evidence=None, status=FindingStatus.NOT_MENTIONED, locations=None)
    )
    assert value.status is FindingStatus.NOT_MENTIONED and value.flags == ()  # type: ignore[attr-defined]
    odd = _value(
        VariableAnswer(
            evidence="small right pleural effusion",
            status=FindingStatus.PRESENT,
            locations=["right_upper_lobe"],
        )
    )
    assert odd.locations == () and "unknown_location_dropped" in odd.flags  # type: ignore[attr-defined]


def test_status_confidence_from_first_free_token() -> None:
    pieces = [
        ('{"a":{"evidence":null,"status":"', 0.0, True),
        ("pres", -0.5, False),
        ('ent","locations":null}}', 0.0, True),
    ]
    generation = Generation(
        text="".join(p[0] for p in pieces), prompt_tokens=1, prompt_tokens_evaluated=1,
        completion_tokens=3, forced_tokens=2, seconds=0.1,
        steps=[TokenStep(text, logprob, forced) for text, logprob, forced in pieces],
    )  # fmt: skip
    assert status_confidences(generation, ["a"]) == {"a": round(2.718281828**-0.5, 4)}
