"""One Observation per finding and stated site (issue 23 item 6).

Stage 1 and the Bundle on real template phrasing: a side that contains a stated lobe is not a
site of its own ("bilateral ground-glass opacity in both lower lobes" is the two lower lobes,
not also both lungs), and a general finding (chest_findings' lung opacity) gives no Observation
beside the specific one named by the same words. The extraction itself still says lung opacity
is present (the labels count it so); only the Bundle leaves the duplicate out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mappings.errors import TemplateError
from mappings.fhir_out import build_bundle, observation_references
from mappings.observation_sites import observation_sites
from mappings.report import Evidence, Extraction, FindingStatus, FindingValue, Report, Stage
from mappings.sections import find_sections
from mappings.template import get_template, parse_template
from workers.rules_stage import extract_rules

BOTH_LOWER = ["left lower lobe", "right lower lobe"]
BOTH_LUNGS = ["left lung / left side", "right lung / right side"]


def _extract(template_id: str, text: str, language: str = "en") -> tuple[Report, Extraction]:
    report = Report(
        source_format="fhir",
        report_id="r",
        language=language,
        text=text,
        sections=find_sections(text),
    )
    return report, extract_rules(report, get_template(template_id))


def _observations(template_id: str, text: str, language: str = "en") -> dict[str, list[str]]:
    """Observation code text -> sorted bodySite texts ("" for none), as the Bundle emits them."""
    report, extraction = _extract(template_id, text, language)
    bundle = build_bundle(report, extraction, get_template(template_id))
    found: dict[str, list[str]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Observation":
            site = resource.get("bodySite", {}).get("text", "")
            found.setdefault(resource["code"]["text"], []).append(site)
    return {code: sorted(sites) for code, sites in found.items()}


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Ground-glass opacity in both lower lobes.", "en"),
        ("Bilateral ground-glass opacity in both lower lobes.", "en"),
        ("Ground-glass opacities in both lungs, in both lower lobes.", "en"),
        ("Bibasilar ground-glass opacities.", "en"),
        ("Matglas in beide onderkwabben.", "nl"),
        ("Milchglastrübung basal beidseits.", "de"),
    ],
)
def test_both_lower_lobes_is_two_sites_and_one_finding(text: str, language: str) -> None:
    assert _observations("chest_findings", text, language) == {"Ground-glass opacity": BOTH_LOWER}


def test_the_extraction_still_counts_the_general_finding() -> None:
    _, extraction = _extract("chest_findings", "Ground-glass opacity in both lower lobes.")
    opacity = extraction.value_of("lung_opacity")
    assert opacity is not None and opacity.status is FindingStatus.PRESENT
    assert opacity.locations == ("both_lower_lobes",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bilateral ground-glass opacities.", {"Ground-glass opacity": BOTH_LUNGS}),
        ("Bilateral infiltrates.", {"Infiltrate": BOTH_LUNGS}),
        ("Ground-glass opacity at the right base.", {"Ground-glass opacity": ["right lower lobe"]}),
        ("Opacity at the right base.", {"Lung opacity": ["right lower lobe"]}),
        (
            "Bilateral opacities, worse at the right base.",
            {"Lung opacity": ["left lung / left side", "right lower lobe"]},
        ),
        # another statement of an opacity stays its own finding
        (
            "Right basilar opacity. Ground-glass opacity in both lower lobes.",
            {"Ground-glass opacity": BOTH_LOWER, "Lung opacity": BOTH_LOWER},
        ),
        ("No ground-glass opacity.", {"Ground-glass opacity": [""]}),
    ],
)
def test_chest_findings_sites(text: str, expected: dict[str, list[str]]) -> None:
    assert _observations("chest_findings", text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ground-glass opacity in both lower lobes.", BOTH_LOWER),
        ("Bilateral ground-glass opacity in both lower lobes.", BOTH_LOWER),
        ("Ground-glass opacity at the right base.", ["right lower lobe"]),
    ],
)
def test_chest_ct_sites(text: str, expected: list[str]) -> None:
    assert _observations("chest_ct", text)["Ground-glass opacity"] == expected


def _value(
    variable_id: str,
    locations: tuple[str, ...],
    span: tuple[int, int] = (0, 40),
    status: FindingStatus = FindingStatus.PRESENT,
) -> FindingValue:
    return FindingValue(
        variable_id=variable_id,
        status=status,
        locations=locations,
        evidence=Evidence(quote="x" * (span[1] - span[0]), start=span[0], end=span[1]),
        stage=Stage.LLM,
    )


def _site_ids(values: list[FindingValue]) -> dict[str, list[str | None]]:
    sites = observation_sites(get_template("chest_findings"), values)
    return {key: [s.id if s else None for s in found] for key, found in sites.items()}


def test_a_model_answer_with_side_and_lobes_gives_the_lobes() -> None:
    """Any stage: the rule is the Bundle's, not only stage 1's."""
    value = _value("ground_glass_opacity", ("bilateral", "both_lower_lobes"))
    assert _site_ids([value]) == {"ground_glass_opacity": ["right_lower_lobe", "left_lower_lobe"]}
    value = _value("ground_glass_opacity", ("right_lung", "right_lower_lobe", "left_lung"))
    assert _site_ids([value]) == {"ground_glass_opacity": ["right_lower_lobe", "left_lung"]}


def test_the_general_finding_stays_where_the_specific_one_is_not() -> None:
    ggo = _value("ground_glass_opacity", ("right_lower_lobe",))
    # the same statement, another site: that site stays; a lobe beside its lung drops the lung
    opacity = _value("lung_opacity", ("right_lung", "left_upper_lobe"))
    assert _site_ids([ggo, opacity])["lung_opacity"] == ["left_upper_lobe"]
    # another statement, another status, or no evidence: kept whole
    elsewhere = _value("lung_opacity", ("right_lower_lobe",), span=(50, 80))
    assert _site_ids([ggo, elsewhere])["lung_opacity"] == ["right_lower_lobe"]
    unsure = _value("lung_opacity", ("right_lower_lobe",), status=FindingStatus.UNCERTAIN)
    assert _site_ids([ggo, unsure])["lung_opacity"] == ["right_lower_lobe"]
    unquoted = _value("lung_opacity", ("right_lower_lobe",)).model_copy(update={"evidence": None})
    assert _site_ids([ggo, unquoted])["lung_opacity"] == ["right_lower_lobe"]
    # without a site it is the same finding
    bare = _value("lung_opacity", ())
    assert "lung_opacity" not in _site_ids([ggo, bare])


def test_the_timeline_names_only_emitted_observations() -> None:
    report, extraction = _extract("chest_findings", "Ground-glass opacity in both lower lobes.")
    template = get_template("chest_findings")
    opacity = extraction.value_of("lung_opacity")
    ggo = extraction.value_of("ground_glass_opacity")
    assert opacity is not None and ggo is not None
    assert observation_references(report, template, opacity, extraction.values) == []
    bundle = build_bundle(report, extraction, template)
    ids = {f"Observation/{e['resource']['id']}" for e in bundle["entry"]}
    references = observation_references(report, template, ggo, extraction.values)
    assert len(references) == 2 and set(references) <= ids


def test_includes_must_name_other_presence_variables() -> None:
    path = Path(__file__).parents[1] / "mappings" / "templates" / "chest_findings.yaml"
    text = path.read_text("utf-8")
    assert "includes: [ground_glass_opacity, infiltration]" in text
    wrong = text.replace(
        "includes: [ground_glass_opacity, infiltration]", "includes: [lung_opacity, no_such]"
    )
    with pytest.raises(TemplateError) as raised:
        parse_template(wrong, "chest_findings.yaml")
    message = str(raised.value)
    assert "variables.lung_opacity.includes" in message
    assert "'lung_opacity'" in message and "'no_such'" in message


@pytest.mark.parametrize(
    "text",
    [
        "Bilateral effusions, larger on the right.",
        "Right and bilateral effusions.",
        "Effusions, right more than left, bilateral.",
    ],
)
def test_a_side_beside_bilateral_is_no_extra_site(text: str) -> None:
    _, extraction = _extract("chest_findings", text)
    effusion = extraction.value_of("pleural_effusion")
    assert effusion is not None and effusion.locations == ("bilateral",)
