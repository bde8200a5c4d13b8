"""Choose the template(s) for a report, and say why (`Routing`).

Order of evidence:
1. explicit: the caller names the template (`--template`, a `template` column): it wins.
2. procedure_code: the report's procedure code is one a template lists (modality permitting).
3. body_part: modality AND body region known (from the report's fields, else from its exam
   line: procedure name, exam section or first line) and matching the template ("MR" +
   "HEAD"/"hersenen"/"Schädel" -> the brain templates). When several templates share the
   modality and region (memory clinic vs oncology), content chooses among them
   (modality+content): the most variables mentioned, a routing keyword anywhere counting as
   KEYWORD_WEIGHT more; a tie keeps them all. Such a report is never `no_template`. An exam of
   two regions ("CT chest + abdomen") gets a template for each. A region word inside a
   diagnosis of the exam line ("MRI brain for follow-up of breast cancer", "Mammakarzinom")
   is not the exam's region when the line names another (`content.regions_named`).
4. keyword: a template's keyword in the exam line (for templates that declare no body part).
5. content: otherwise (modality and/or region unknown: plain text, a backfill row) the template
   whose variables the report mentions most, at least MIN_VARIABLES of them, among the
   templates its known modality and region (or the region its text speaks of) allow.
6. modality+text region: the modality is known, the region is not and too few variables are
   mentioned (a normal study: "Both lungs are clear. No active disease."): the templates of
   that modality whose region the findings and impression name more than any other region,
   one distinct word sufficing (`content.region_of_text`; on a radiograph "heart", "hilum" and
   "chest" are chest words too). The history section is not read (the question is not the exam).
A known modality or region that is not the template's always refuses it: a chest X-ray never
goes to a brain template or to chest_ct. Nothing applies -> no template; `Routing.detail()`
lists each candidate and why it was refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mappings import routing_content as content
from mappings.report import Report
from mappings.sections import find_sections
from mappings.template import Template
from mappings.units import flowed

EXAM_PREFIX_CHARS = 200
FIRST_LINE_CHARS = 80
MIN_VARIABLES = 2
KEYWORD_WEIGHT = 2
MODALITY_PREFERENCE = ("XR", "CT", "MR")


@dataclass(frozen=True)
class RouteReason:
    """Why one template was chosen: `rule` is procedure_code | body_part | modality+content |
    content | modality+text region | keyword | explicit."""

    template: str
    rule: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        """The `routing` entry of an extraction record."""
        return {"template": self.template, "rule": self.rule, "detail": self.detail}


@dataclass(frozen=True)
class Refusal:
    """A template considered and not chosen, and why."""

    template: str
    why: str


@dataclass(frozen=True)
class Routing:
    """The routing decision for one report."""

    chosen: tuple[Template, ...]
    reasons: tuple[RouteReason, ...]
    refused: tuple[Refusal, ...] = ()
    evidence: str = ""

    def reason_for(self, template_id: str) -> RouteReason | None:
        """The reason the template was chosen (None when it was not)."""
        return next((r for r in self.reasons if r.template == template_id), None)

    def detail(self) -> str:
        """One line: what the report showed, then each refused candidate and why."""
        refused = "; ".join(f"{r.template}: {r.why}" for r in self.refused)
        return f"{self.evidence}; refused: {refused}" if refused else self.evidence


@dataclass
class _Facts:
    """What routing read from a report."""

    modalities: frozenset[str]
    modality_source: str
    regions: frozenset[str]
    region_source: str
    text_region: str | None
    exam: str
    text: str
    body: str
    scores: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)

    def describe(self) -> str:
        modality = "/".join(sorted(self.modalities)) or "unknown"
        region = "/".join(sorted(self.regions)) or (
            f"unknown (text speaks of {self.text_region})" if self.text_region else "unknown"
        )
        return (
            f"modality {modality} ({self.modality_source}), body region {region} "
            f"({self.region_source})"
        )


def _first_line(report: Report) -> str:
    """The report's first line when it names the exam (not when a findings, history or other
    section starts there: "Findings: Heart size normal" is no exam line)."""
    text = report.text
    start = len(text) - len(text.lstrip())
    sections = report.sections or find_sections(text)
    if any(sec.start <= start < sec.end and sec.name != "exam" and sec.start >= start - 1
           for sec in sections):  # fmt: skip
        return ""
    line = flowed(text)[start:].split("\n", 1)[0]  # an exam name wrapped onto two lines is one
    return line[:FIRST_LINE_CHARS]


def _exam_line(report: Report) -> str:
    parts = [report.procedure.display or "" if report.procedure else ""]
    exam = report.section_text("exam")
    if exam:
        parts.append(exam[:EXAM_PREFIX_CHARS])
    parts.append(_first_line(report))
    return " \n ".join(p for p in parts if p)


def _body(report: Report) -> str:
    """The report text without its history/indication section(s)."""
    sections = report.sections or find_sections(report.text)
    text = report.text
    for section in sorted(sections, key=lambda s: -s.start):
        if section.name == "history":
            text = text[: section.start] + " " + text[section.end :]
    return text


def _facts(report: Report) -> _Facts:
    exam = _exam_line(report)
    family = content.modality_family(report.modality)
    if family is not None:
        modalities, modality_source = frozenset({family}), f"modality {report.modality}"
    else:
        modalities = content.modalities_named(exam)
        modality_source = "exam line" if modalities else "not stated"
    region = content.body_region(report.body_part)
    if region is not None:
        regions, region_source = frozenset({region}), f"body part {report.body_part}"
    else:
        regions = content.regions_named(exam)
        region_source = "exam line" if regions else "not stated"
    body = _body(report)
    family = next(iter(modalities)) if len(modalities) == 1 else None
    text_region = None if regions else content.region_of_text(body, family)
    return _Facts(modalities, modality_source, regions, region_source, text_region, exam,
                  report.text, body)  # fmt: skip


def _template_modalities(template: Template) -> frozenset[str]:
    return frozenset(
        family
        for family in (content.modality_family(m) for m in template.applies_to.modalities)
        if family is not None
    )


def _template_regions(template: Template) -> frozenset[str]:
    return frozenset(
        region
        for region in (content.body_region(p) for p in template.applies_to.body_parts)
        if region is not None
    )


def _score(facts: _Facts, template: Template) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
    cached = facts.scores.get(template.id)
    if cached is None:
        variables = content.variables_mentioned(template, facts.text)
        keywords = content.keywords_named(template, f"{facts.exam}\n{facts.text}")
        cached = (len(variables) + (KEYWORD_WEIGHT if keywords else 0), variables, keywords)
        facts.scores[template.id] = cached
    return cached


def _score_text(facts: _Facts, template: Template) -> str:
    _, variables, keywords = _score(facts, template)
    text = f"{template.id} {len(variables)} variable(s)"
    return text + (f" + keyword {keywords[0]!r}" if keywords else "")


def _gate(facts: _Facts, template: Template) -> str | None:
    """Why the template cannot be meant for the report (None: it can)."""
    rule = template.applies_to
    if not (rule.modalities or rule.body_parts or rule.procedure_codes or rule.keywords):
        return "declares no applies_to (explicit use only)"
    mods = _template_modalities(template)
    if facts.modalities and mods and not facts.modalities & mods:
        named = "/".join(sorted(facts.modalities))
        return f"modality {named} is not {'/'.join(sorted(mods))}"
    regions = _template_regions(template)
    if facts.regions and regions and not facts.regions & regions:
        named = "/".join(sorted(facts.regions))
        return f"body region {named} is not {'/'.join(sorted(regions))}"
    return None


def _procedure_hit(report: Report, template: Template) -> bool:
    procedure = report.procedure
    return bool(
        procedure
        and procedure.code
        and any(code.code == procedure.code for code in template.applies_to.procedure_codes)
    )


def _best(facts: _Facts, templates: list[Template]) -> list[Template]:
    top = max(_score(facts, t)[0] for t in templates)
    return [t for t in templates if _score(facts, t)[0] == top]


def decide(report: Report, templates: list[Template], explicit: bool = False) -> Routing:
    """The routing decision for `report` among `templates` (all of them when `explicit`)."""
    if explicit:
        reasons = tuple(
            RouteReason(t.id, "explicit", "template named by the caller") for t in templates
        )
        return Routing(tuple(templates), reasons, evidence="explicit template")
    facts = _facts(report)
    refused: dict[str, str] = {}
    open_: list[Template] = []
    for template in templates:
        why = _gate(facts, template)
        if why is None:
            open_.append(template)
        else:
            refused[template.id] = why
    chosen, why_chosen = _choose(report, facts, open_, refused)
    return Routing(
        tuple(chosen),
        tuple(why_chosen),
        tuple(Refusal(t.id, refused[t.id]) for t in templates if t.id in refused),
        facts.describe(),
    )


def _choose(
    report: Report, facts: _Facts, open_: list[Template], refused: dict[str, str]
) -> tuple[list[Template], list[RouteReason]]:
    by_code = [t for t in open_ if _procedure_hit(report, t)]
    if by_code:
        code = report.procedure.code if report.procedure else ""
        return by_code, [
            RouteReason(t.id, "procedure_code", f"procedure code {code}") for t in by_code
        ]
    structural = [
        t
        for t in open_
        if facts.modalities & _template_modalities(t) and facts.regions & _template_regions(t)
    ]
    where = (
        f"{'/'.join(sorted(facts.modalities))} + {'/'.join(sorted(facts.regions))} "
        f"({facts.modality_source}; {facts.region_source})"
    )
    if structural:
        return _by_region(facts, structural, where, refused)
    by_keyword = [
        t
        for t in open_
        if content.keywords_named(t, facts.exam) and _text_region_fits(facts, t, refused)
    ]
    if by_keyword:
        return by_keyword, [
            RouteReason(
                t.id,
                "keyword",
                f"keyword {content.keywords_named(t, facts.exam)[0]!r} in the exam line",
            )
            for t in by_keyword
        ]
    return _by_content(facts, open_, refused)


def _text_region_fits(facts: _Facts, template: Template, refused: dict[str, str]) -> bool:
    """False (and why) when the region the text speaks of is not the template's."""
    regions = _template_regions(template)
    if facts.text_region and regions and facts.text_region not in regions:
        refused[template.id] = f"the text speaks of the {facts.text_region}"
        return False
    return True


def _by_region(
    facts: _Facts, structural: list[Template], where: str, refused: dict[str, str]
) -> tuple[list[Template], list[RouteReason]]:
    """Modality and region match: per region the exam names ("CT chest + abdomen" names two),
    its only template, or among several (memory clinic vs oncology) the ones whose variables the
    report mentions most."""
    chosen: list[Template] = []
    reasons: list[RouteReason] = []
    for region in sorted(facts.regions):
        group = [t for t in structural if region in _template_regions(t) and t not in chosen]
        if len(group) == 1:
            chosen.append(group[0])
            reasons.append(RouteReason(group[0].id, "body_part", where))
        elif group:
            best = _best(facts, group)
            scores = ", ".join(_score_text(facts, t) for t in group)
            chosen.extend(best)
            reasons.extend(
                RouteReason(t.id, "modality+content", f"{where}; {scores}") for t in best
            )
            for template in group:
                if template not in best:
                    refused[template.id] = f"fewer of its variables mentioned ({scores})"
    for template in chosen:
        refused.pop(template.id, None)
    return chosen, reasons


def _by_content(
    facts: _Facts, open_: list[Template], refused: dict[str, str]
) -> tuple[list[Template], list[RouteReason]]:
    candidates: list[Template] = []
    for template in open_:
        if not _text_region_fits(facts, template, refused):
            continue
        if _score(facts, template)[0] < MIN_VARIABLES:
            refused[template.id] = (
                f"{_score_text(facts, template)} mentioned (at least {MIN_VARIABLES} needed)"
            )
        else:
            candidates.append(template)
    if not candidates:
        return _by_text_region(facts, open_, refused)
    if not facts.modalities:
        candidates = _likely_modality(facts, candidates, refused)
    best = _best(facts, candidates)
    scores = ", ".join(_score_text(facts, t) for t in candidates)
    for template in candidates:
        if template not in best:
            refused[template.id] = f"fewer of its variables mentioned ({scores})"
    rule = "modality+content" if facts.modalities else "content"
    return best, [RouteReason(t.id, rule, f"{facts.describe()}; {scores}") for t in best]


def _by_text_region(
    facts: _Facts, open_: list[Template], refused: dict[str, str]
) -> tuple[list[Template], list[RouteReason]]:
    """One modality known, region unknown, too few variables mentioned: the templates of that
    modality and of the region the report body names (one distinct word suffices)."""
    if len(facts.modalities) != 1 or facts.regions:
        return [], []
    modality = next(iter(facts.modalities))
    region = content.region_of_text(facts.body, modality, min_hits=1)
    if region is None:
        return [], []
    hits = [
        t for t in open_ if modality in _template_modalities(t) and region in _template_regions(t)
    ]
    if not hits:
        return [], []
    best = _best(facts, hits)
    for template in best:
        refused.pop(template.id, None)
    where = f"{modality} ({facts.modality_source}) + the text speaks of the {region}"
    return best, [
        RouteReason(t.id, "modality+text region", f"{where}; {_score_text(facts, t)}") for t in best
    ]


def _likely_modality(
    facts: _Facts, candidates: list[Template], refused: dict[str, str]
) -> list[Template]:
    """Candidates of several modalities and no modality stated: keep the modality the text's
    wording points to (content.modality_cues), the first of MODALITY_PREFERENCE on a tie (a
    plain-text chest report is far more often a radiograph than a CT)."""
    families = {t.id: _template_modalities(t) for t in candidates}
    named = set().union(*families.values())
    if len(named) < 2:
        return candidates
    cues = content.modality_cues(facts.text)
    order = {family: index for index, family in enumerate(MODALITY_PREFERENCE)}
    pick = max(named, key=lambda f: (cues.get(f, 0), -order.get(f, len(order))))
    cued = set(MODALITY_PREFERENCE)
    # a template that also takes a modality without wording cues (US, MG) is not judged by them
    kept = [
        t
        for t in candidates
        if not families[t.id] or pick in families[t.id] or families[t.id] - cued
    ]
    for template in candidates:
        if template not in kept:
            refused[template.id] = (
                f"the wording points to {pick}, not {'/'.join(sorted(families[template.id]))}"
            )
    return kept


def route(report: Report, templates: list[Template]) -> list[Template]:
    """The templates chosen for `report` among `templates`, in the given order."""
    chosen = decide(report, templates).chosen
    return [t for t in templates if t in chosen]


def applies(template: Template, report: Report) -> bool:
    """True when `template` is chosen for `report` in competition with the built-in templates
    (a template of the same id replaces the built-in one)."""
    from mappings.template import load_builtin_templates

    pool = {t.id: t for t in load_builtin_templates().values()}
    pool[template.id] = template
    return template in decide(report, list(pool.values())).chosen
