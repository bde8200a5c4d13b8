"""workers/prompt.py: the template part is a stable shared prefix, the report comes last."""

from __future__ import annotations

from mappings.report import Report
from mappings.template import get_template
from workers.prompt import ChatML, build_prompt, system_text

TEMPLATE = get_template("chest_findings")


def _report(text: str, report_id: str) -> Report:
    return Report(source_format="hl7v2", report_id=report_id, text=text)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def test_two_reports_share_the_whole_template_prefix() -> None:
    first = build_prompt(TEMPLATE, _report("Small right pleural effusion.", "a"))
    second = build_prompt(TEMPLATE, _report("Geen pneumothorax. Cor niet vergroot.", "b"))
    shared = _common_prefix(first, second)
    system = system_text(TEMPLATE)
    assert system in first[:shared]  # instructions + definitions + schema all before the split
    assert first.index(system) + len(system) <= shared
    assert first.endswith("<|im_start|>assistant\n")


def test_report_text_is_last_and_unchanged() -> None:
    text = "Kein Pleuraerguss.\nGröße ±2 cm; 우측 폐 consolidation."
    prompt = build_prompt(TEMPLATE, _report(text, "c"))
    assert text in prompt
    assert prompt.index(text) > prompt.index(system_text(TEMPLATE))


def test_prefix_names_every_variable_and_its_locations() -> None:
    system = system_text(TEMPLATE)
    for variable in TEMPLATE.variables:
        assert variable.id in system
        for location in variable.locations:
            assert location in system
    assert system == system_text(TEMPLATE)  # deterministic


def test_hints_follow_the_report_and_a_custom_chat_format_is_used() -> None:
    class Plain:
        def chat_prompt(self, system: str, user: str) -> str:
            return f"S:{system}\nU:{user}"

    report = _report("Small right pleural effusion.", "d")
    prompt = build_prompt(TEMPLATE, report, chat=Plain(), hints="pleural_effusion: present")
    assert prompt.startswith("S:")
    assert prompt.index("pleural_effusion: present") > prompt.index(report.text)
    assert build_prompt(TEMPLATE, report) == build_prompt(TEMPLATE, report, chat=ChatML())
