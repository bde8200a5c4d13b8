"""Every current size a report states, with the finding phrase it measures (`find_sizes`).

The sizes are those of `workers.measurements.size_hits` in each sentence (priors, walls and
distances left out; a range gives its largest value). A size negated in its phrase ("no nodule
over 5 mm") or in a history/comparison line is left out. The finding is the phrase the size
measures, as written: the words after it when the size opens a noun phrase ("a 9 mm hypodense
lesion in segment 4"), else the words before it in its phrase ("Baker cyst measuring 3.5 x
1.2 cm"), trimmed of linking words ("measuring", "van", "mit"), after the sentence's label when
it is only a side ("Kidneys: Right 10.9 cm"); no code is looked up. The size of a normal structure
("CBD 4 mm", "Milt 11 cm", "Kidneys: Right 10.9 cm", "The appendix is normal in caliber (5 mm)")
and a threshold ("below the FNA threshold
(2.5 cm)") are not findings' sizes. A size with no more dimensions than an earlier one of the same
largest dimension restates it; a fuller one (the ultrasound's "8 x 5 x 6 mm" after the
mammogram's "8 mm") is its own.
"""

from __future__ import annotations

import re

from mappings.insights.model import SizedFinding
from mappings.report import Evidence, Measurement
from workers.insights.text import ReportText
from workers.measurements import SizeHit, size_hits

_BREAK = re.compile(r"[,;:()\n]|\s[-–]\s")
_FORWARD = re.compile(
    r"(?:^|\b(?:a|an|the|with|and|plus|een|de|het|met|en|ein|eine|einer|einem|einen|eines"
    r"|der|die|das|den|dem|mit|und|sowie|ca\.?|circa|approximately|approx\.?|etwa))\s*$",
    re.IGNORECASE,
)
_PHRASE_END = re.compile(
    r"[,;:().\n]|\s[-–]\s|\b(?:is|are|was|which|that|measuring|measures|seen|noted|without"
    r"|ist|sind|wird|zeigt|welche|ohne|wordt|zijn|die|zonder|meet|gemeten)\b",
    re.IGNORECASE,
)
_LINK_TAIL = re.compile(
    r"(?:\s+(?:measuring|measures|measured|measure|of|at|to|up|is|are|now|with|by|approximately"
    r"|approx\.?|about|circa|ca\.?|van|tot|met|meet|maximaal|von|mit|bis|zu|auf|ist|misst|etwa"
    r"|dilated|enlarged|thickness|diameter|dikte|diameter|durchmesser|größe|grootte|a|an|the"
    r"|een|de|het|ein|eine|einer|einem|einen|der|die|das|den|dem|maximum|maximale|maximal)\b"
    r"\.?)+\s*$",
    re.IGNORECASE,
)
_NEGATION = re.compile(
    r"\b(?:no|without|negative for|geen|zonder|kein\w*|ohne|nicht)\b", re.IGNORECASE
)
_THRESHOLD = re.compile(
    r"\b(?:threshold|cut-?off|larger than|greater than|smaller than|drempel|groter dan"
    r"|kleiner dan|schwelle\w*|grenzwert|größer als|kleiner als|more than|meer dan|mehr als"
    r"|exceeding|at least|mindestens|minstens|withdraw\w*|advanc\w*|retract\w*|terugtrek\w*"
    r"|zurückzieh\w*|zurückgezogen|vorschieben|opvoeren)\b|[<>≥≤]",
    re.IGNORECASE,
)
_SIDE = re.compile(
    r"right|left|rechts|links|rechter|linker|rechte|linke|re\.?|li\.?|bilateral|beide|both"
)
_NORMAL = re.compile(
    r"kidneys?|nier(?:en)?|nieren?|spleen|milt|milz|liver|lever|leber|cbd|ductus|choledochus"
    r"|common|bile|duct|dhc|endometri(?:um|al)|endometriumdikte|isthmus|lobe|lappen|kwab"
    r"|schildklierkwab|schilddrüsenlappen|uterus|ovary|ovarium|ovar|ovaries|prostate|prostaat"
    r"|prostata|pancreas|pancreatic|aorta|thickness|stripe|ventricle|the|de|het|der|die|das"
)
_STATED_NORMAL = re.compile(
    r"\b(?:normal|normaal|normale?|regelrecht\w*|unauffällig\w*|not (?:enlarged|dilated|thickened)"
    r"|niet (?:vergroot|verwijd|verdikt)|nicht (?:vergrößert|erweitert|verdickt))\b",
    re.IGNORECASE,
)
"""A phrase that calls its structure normal ("The appendix is normal in caliber (5 mm)")."""
_LABEL = re.compile(r"([^:\n]{1,40}):")
"""The label a sentence opens with ("Kidneys: Right 10.9 cm, left 11.2 cm")."""
_HISTORY = frozenset({"history", "comparison", "indication", "clinical"})
_MAX_WORDS = 8


def _words(phrase: str, *, last: bool) -> str:
    words = phrase.split()
    kept = words[-_MAX_WORDS:] if last else words[:_MAX_WORDS]
    return " ".join(kept).strip(" .,;:-–")


def _after(text: str, hit: SizeHit, end: int) -> str:
    stop = _PHRASE_END.search(text, hit.end, end)
    return _words(text[hit.end : stop.start() if stop else end], last=False)


def _before(text: str, start: int, hit: SizeHit) -> tuple[str, int]:
    """The words before the size in its phrase, or in the phrase before when its own holds
    none ("Lesion 1: peripheral zone left, 9 mm"; at most two phrases back), and where they start."""
    cuts = [start, *(m.end() for m in _BREAK.finditer(text, start, hit.start))]
    end = hit.start
    for cut in reversed(cuts[-3:]):
        words = _words(_LINK_TAIL.sub("", " " + text[cut:end]), last=True)
        if words:
            return words, cut
        end = cut
    return "", cuts[-1]


def finding_phrase(text: str, sentence: tuple[int, int], hit: SizeHit) -> tuple[str, int]:
    """The words of `text` the size measures (empty when the sentence names none) and where
    the phrase that holds them starts."""
    start, end = sentence
    breaks = list(_BREAK.finditer(text, start, hit.start))
    phrase_start = breaks[-1].end() if breaks else start
    if _FORWARD.search(text[phrase_start : hit.start]):
        after = _after(text, hit, end)
        if after:
            return after, phrase_start
    before, cut = _before(text, start, hit)
    after = _after(text, hit, end)
    if before and after and len(before.split()) == 1 and cut == phrase_start:
        return f"{before} {after}", cut  # "Incidental 2 cm left adnexal cyst"
    return (before, cut) if before else (after, phrase_start)


def _normal(phrase: str) -> bool:
    """A normal structure's size ("Kidneys: Right 10.9 cm", "CBD 4 mm", "Milt 11 cm")."""
    words = [w for w in re.split(r"[\s:]+", phrase.casefold()) if w and not _SIDE.fullmatch(w)]
    return bool(words) and all(_NORMAL.fullmatch(w) for w in words)


def find_sizes(doc: ReportText) -> tuple[SizedFinding, ...]:
    """The current sizes of `doc`, each with the finding phrase it measures."""
    text, folded = doc.text, doc.folded
    found: list[SizedFinding] = []
    seen: dict[float, int] = {}
    if "mm" not in folded and "cm" not in folded:
        return ()  # every size has its unit (a quick test before the sentences' scans)
    for sentence in doc.sentences:
        start, end = sentence
        if folded.find("mm", start, end) < 0 and folded.find("cm", start, end) < 0:
            continue
        if doc.section_at(start) in _HISTORY and doc.in_sections(start, _HISTORY):
            continue
        for hit in size_hits(text, start, end):
            phrase, phrase_start = finding_phrase(text, sentence, hit)
            if phrase and all(_SIDE.fullmatch(w) for w in phrase.casefold().split()):
                label = _LABEL.match(text, start, hit.start)
                phrase = f"{label[1].strip()} {phrase}" if label else phrase
            between = text[phrase_start : hit.start]
            if (
                not phrase
                or _normal(phrase)
                or _STATED_NORMAL.search(phrase)
                or _NEGATION.search(between)
                or _THRESHOLD.search(between)
            ):
                continue
            size = Measurement(
                dims=hit.dims,
                unit=hit.unit,
                evidence=Evidence(quote=doc.raw[hit.start : hit.end], start=hit.start, end=hit.end),
            )
            largest = max(size.dims_mm)
            if len(size.dims) <= seen.get(largest, 0):
                continue  # a restatement (the impression's "1.6 cm" of "1.6 x 1.1 x 1.0 cm")
            seen[largest] = len(size.dims)
            found.append(
                SizedFinding(finding=phrase, size=size, evidence=doc.span(hit.start, hit.end))
            )
    return tuple(found)
