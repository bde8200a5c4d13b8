"""Critical results: a finding of the critical list stated as present in this exam.

A mention flags unless ConText (`workers.context.assess`) finds it negated, historical,
hypothetical or about someone else, or a hedge sits before it in its clause ("likely",
"suspicious for", "mogelijk", "V.a.", "fraglich") or after it ("cannot be excluded", "niet uit te
sluiten"); "consistent with" / "passend bij" / "vereinbar mit" are statements, not hedges. The
history/indication and comparison lines, known-unchanged findings and expected postoperative states do not
flag. One result per finding per report; a finding listed in `supersedes` hides the other.
"""

from __future__ import annotations

import re

from mappings.insights.critical_list import CriticalFinding
from mappings.insights.model import CriticalResult
from workers.context import assess
from workers.insights.text import ReportText, may_match

_HEDGE_BEFORE = re.compile(
    r"(?<!\w)(?:likely|unlikely|probable|probably|possible|possibly|suspicious|suspected|"
    r"suspicion|concerning|questionable|equivocal|presumed|may represent|might|could|versus|vs\.?|"
    r"r/o|rule out|waarschijnlijk|mogelijk|mogelijke|verdacht|verdenking|twijfelachtig|"
    r"v\.a\.|verdacht auf|verdachts?|fraglich\w*|wahrscheinlich\w*|möglich\w*|dd|"
    r"differentialdiagnos\w*|eher|bedenkelijk|evaluation for|evaluate for|assessment for|"
    r"to assess for|screening for|ter uitsluiting|uitsluiting van|beoordeling op|zum ausschluss|"
    r"ausschluss|frage nach|am ehesten|ehesten|vermutlich|a\.e\.|verdächtig\w*|suspekt\w*|"
    r"suggestive|suggesting|suggests|worrisome|favou?red|presumably|vermoedelijk\w*|suggestief|"
    r"dubieu\w*|kan passen|zou kunnen|kann|könnte|could represent|may be)(?!\w)",
    re.IGNORECASE,
)
_HEDGE_AFTER = re.compile(
    r"(?<!\w)(?:cannot be (?:excluded|ruled out)|can ?not be (?:excluded|ruled out)|not excluded|"
    r"is not excluded|niet uit te sluiten|niet uitgesloten|nicht (?:sicher )?auszuschließen|"
    r"nicht ausgeschlossen|is suspected|wordt vermoed|denkbar|vermutet|is (?:also )?possible|"
    r"not entirely excluded|\?)",
    re.IGNORECASE,
)
_NOT_NEW = re.compile(
    r"(?<!\w)(?:known|unchanged|stable|chronic|resolv\w*|resolution|improv\w*|expected|"
    r"postoperative|post-operative|bekend\w*|ongewijzigd\w*|stabiel\w*|chronisch\w*|verbeterd|"
    r"afgenomen|postoperatie\w*|bekannt\w*|unverändert\w*|chronisch\w*|rückläufig\w*|"
    r"regredient\w*|postoperativ\w*|residual|rest(?!rict|less|ing|or|aur)\w*|z\.n\.|zustand nach|"
    r"status na|(?:interval )?decrease[sd]? in size|decreasing|now smaller|evolving|regressing|"
    r"verkleind|kleiner geworden|größenregredient\w*|abnehmend\w*|"
    r"no (?:new|residual)|geen (?:nieuwe|resterende))(?!\w)",
    re.IGNORECASE,
)
_ACUTE_ON_CHRONIC = re.compile(
    r"(?<!\w)(?:acute|akut|acuut)[- ](?:on|auf|op)[- ]chronic\w*|akut-auf-chronisch\w*",
    re.IGNORECASE,
)
"""An acute-on-chronic finding is new: its "chronic" does not make it known."""
_STABLE_PATIENT = re.compile(
    r"(?<!\w)(?:ha?emodynamically|hämodynamisch|hemodynamisch|clinically|klinisch|kreislauf)\s+"
    r"(?:\w+\s+)?(?:stable|stabil\w*)",
    re.IGNORECASE,
)
"""A stable patient is not a known, stable finding."""
_CONTRAST = re.compile(
    r"[,;]?\s+(?:but|whereas|while|however|maar|echter|terwijl|aber|jedoch|während|hingegen)(?!\w)",
    re.IGNORECASE,
)
"""Where a sentence turns to another finding ("The left pneumothorax has resolved, but there is a
new right pneumothorax"): a known or resolved finding before it does not hide the new one."""
_ANOTHER_FINDING = re.compile(
    r"(?<!\w)(?:paralytic|paralytische[rnsm]?|adynamic|adynamische[rnsm]?|functional|functionele|"
    r"funktionelle[rnsm]?|reflex|sentinel)\s+(?:[\w-]+\s+)?$",
    re.IGNORECASE,
)
"""A qualifier that makes a listed term another, not critical finding ("paralytic ileus",
"paralytischer Ileus"): no flag."""
_QUALIFIER_WINDOW = 30
_TITLE_WORDS = 12
_SENTENCE_BREAK = re.compile(r"[.!?]\s+\S")
_LABEL = re.compile(r"[^\W\d][\w .-]{0,30}:\s*")
"""A heading or label that opens the sentence ("IMPRESSION:", "Beurteilung:"): not evidence."""
_HISTORY = frozenset({"history", "comparison"})
"""A history or comparison line tells of before this exam ("Comparison: ..., which showed a
small right pneumothorax")."""
_EXAM = frozenset({"exam"})
_CLAUSE_MARK = re.compile(r"[,;:(]|\b(?:and|en|und|with|met|mit|bei|but|maar|aber)\b", re.I)


def _clause_before(doc: ReportText, sentence_start: int, start: int) -> str:
    before = doc.text[sentence_start:start]
    marks = [m.end() for m in _CLAUSE_MARK.finditer(before)]
    return before[marks[-1] :] if marks else before


def _title(doc: ReportText, start: int) -> bool:
    """Whether `start` lies in the exam title (a short first line that is no sentence and no
    findings section, or an exam section): a report that opens with its findings has no title."""
    first_line = doc.text.find("\n")
    line = doc.text[:first_line]
    section = doc.section_at(start)
    if start < first_line and section in (None, "exam") and len(line.split()) <= _TITLE_WORDS:
        return not _SENTENCE_BREAK.search(line)  # at most 12 words and one sentence
    return doc.in_sections(start, _EXAM)


def _states(doc: ReportText, start: int, end: int) -> bool:
    """Whether the mention `text[start:end]` states the finding as present in this exam."""
    if doc.in_sections(start, _HISTORY) or _title(doc, start):
        return False
    if _ANOTHER_FINDING.search(doc.text, max(0, start - _QUALIFIER_WINDOW), start):
        return False
    # ConText over the sentence up to the end of the mention's clause: a trigger of the next
    # clause ("... rechts met vrij vocht") is not about this mention; only the sentence is
    # passed, so ConText does not find the units of the whole report again for each mention
    sentence_start, sentence_end = doc.sentence_at(start)
    mark = _CLAUSE_MARK.search(doc.text, end, sentence_end)
    clause_end = mark.start() if mark else sentence_end
    low = sentence_start if sentence_start <= start else 0
    context = assess(doc.text[low:clause_end], start - low, end - low, doc.language)
    if context.negated or context.historical or context.hypothetical or context.other_experiencer:
        return False
    if _HEDGE_BEFORE.search(_clause_before(doc, sentence_start, start)):
        return False
    after = doc.text[end:sentence_end]
    if _HEDGE_AFTER.search(after[: after.find(",") if "," in after else len(after)]):
        return False
    low, high = sentence_start, sentence_end
    for mark in _CONTRAST.finditer(doc.text, sentence_start, sentence_end):
        if mark.end() <= start:
            low = mark.end()
        elif mark.start() >= end:
            high = mark.start()
            break
    part = _STABLE_PATIENT.sub(" ", _ACUTE_ON_CHRONIC.sub(" ", doc.text[low:high]))
    return not _NOT_NEW.search(part)


def find_critical(
    doc: ReportText, findings: tuple[CriticalFinding, ...]
) -> tuple[CriticalResult, ...]:
    """The listed findings this report states as present, one each, in list order."""
    results: dict[str, CriticalResult] = {}
    for finding in findings:
        if not may_match(doc, finding.pattern):
            continue  # none of its words is in the report: no mention to look at
        for match in finding.pattern.finditer(doc.text):
            if _states(doc, match.start(), match.end()):
                sentence_start, sentence_end = doc.sentence_at(match.start())
                label = _LABEL.match(doc.text, sentence_start, match.start())
                evidence = doc.span(label.end() if label else sentence_start, sentence_end)
                results.setdefault(
                    finding.id, CriticalResult(finding=finding.id, evidence=evidence)
                )
                break
    hidden = {s for f in findings if f.id in results for s in f.supersedes}
    return tuple(r for r in results.values() if r.finding not in hidden)
