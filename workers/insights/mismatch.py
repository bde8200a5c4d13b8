"""Mismatches of a report with its order and its patient (issue 20 item 6), by rules.

- laterality: the order names one side and the report describes the other side of a paired body
  part, stated (not negated), and never names the ordered side for one;
- sex: uterus/ovaries/endometrium for a male patient, prostate/seminal vesicles/testes for a female
  one (no check for other, unknown or absent sex);
- age: the age the report states for the patient differs by more than 2 years from the age at the
  report date (no check without a valid birth date on or before the report date);
- exam type: the report's title line names an exam of a body region the order does not cover.
Each kind is found at most once per report; its evidence is the first contradicting mention.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date

from mappings.insights.model import Mismatch, Span
from workers.insights.text import ReportText

_I = re.IGNORECASE
_LEFT = r"left(?:-sided)?|lt|links(?:seitig\w*)?|linke[mnrs]?|linker(?:zijde)?|li(?![\w-])\.?"
_RIGHT = r"right(?:-sided)?|rt|rechts(?:seitig\w*)?|rechte[mnrs]?|rechter(?:zijde)?|re(?![\w-])\.?"
_SIDE = re.compile(rf"(?<!\w)(?:(?P<left>{_LEFT})|(?P<right>{_RIGHT}))(?![\w-])", _I)
_ORDER_BOTH = re.compile(
    r"(?<!\w)(?:bilat\w*|bds|b/l|both|beide\w*|beidseit\w*|beiderzijds|bdz)(?!\w)", _I
)
# paired body parts: English words, and stems that also open Dutch/German compounds
_PART_WORDS = (
    r"knees?|hips?|shoulders?|ankles?|foot|feet|hands?|wrists?|elbows?|breasts?|testis|testes|"
    r"testicles?|ovary|ovaries|kidneys?|arms?|forearms?|legs?|thighs?|heels?|fingers?|thumbs?|toes?"
)
_PART_STEMS = (
    r"kn[ie]e\w*|schulter\w*|schouder\w*|hüft\w*|huft\w*|heup\w*|mamma\w*|borst(?!kas)\w*|"
    r"humerus\w*|radius\w*|ulna\w*|femur\w*|tibia\w*|fibula\w*|patella\w*|clavicul\w*|"
    r"klavikul\w*|scapula\w*|calcane\w*|malleol\w*|sprunggelenk\w*|handgelenk\w*|ellenbogen\w*|"
    r"elleboog\w*|enkel(?!e)\w*|hoden\w*|testi\w*|ovar\w*|nier\w*|pols\w*|voet\w*|fu(?:ß|ss)\w*|"
    r"hand\w*|metacarp\w*|metatars\w*|collum\w*|scaphoid\w*|naviculare\w*|achilles\w*|oberarm\w*|"
    r"unterarm\w*|oberschenkel\w*|unterschenkel\w*|bovenarm\w*|onderarm\w*|bovenbeen\w*|"
    r"onderbeen\w*"
)
_PART = rf"(?:{_PART_WORDS}|{_PART_STEMS})"
_GAP = r"[^\n.,;:()]{0,30}?"
_SIDE_PART = re.compile(
    rf"(?<!\w)(?:(?P<side1>{_LEFT}|{_RIGHT}))(?![\w-]){_GAP}(?<!\w){_PART}(?!\w)"
    rf"|(?<!\w){_PART}(?!\w)[^\n.,;:()]{{0,12}}?(?<!\w)(?P<side2>{_LEFT}|{_RIGHT})(?![\w-])",
    _I,
)
_NEGATION = re.compile(
    r"(?<!\w)(?:no|not|without|geen|niet|zonder|kein\w*|nicht|ohne|kein)(?!\w)", _I
)
_FEMALE = re.compile(
    r"(?<!\w)(?:uterus|uteri|uterine|ovary|ovaries|ovari\w*|ovar(?:ien)?|endometri\w*|"
    r"baarmoeder|eierst[oö]\w*|gebärmutter)(?!\w)",
    _I,
)
_MALE = re.compile(
    r"(?<!\w)(?:prostat\w*|prostaat\w*|seminal vesicles?|zaadbla\w*|samenblas\w*|"
    r"bläschendrüs\w*|testis|testes|testicles?|testikel\w*|hoden|skrotum|scrot\w*)(?!\w)",
    _I,
)
_ABSENT_ORGAN = re.compile(
    r"(?<!\w)(?:absent|not (?:seen|visuali[sz]ed)|removed|niet (?:zichtbaar|aanwezig)|"
    r"nicht (?:abgrenzbar|nachweisbar)|fehlt|entfernt|hysterectom\w*|hysterektom\w*|"
    r"prostatectom\w*|prostatektom\w*)(?!\w)",
    _I,
)
_PERSON_EN = (
    r"man|woman|male|female|patient|boy|girl|gentleman|lady|child|infant|with|who|presenting"
)
_AGE = re.compile(
    r"(?<!\w)(?P<a>\d{1,3})[- ]?(?:years?|yrs?)[- ]old(?=,|\s+(?:" + _PERSON_EN + r")(?!\w))"
    r"|(?<!\w)(?P<b>\d{1,3}) ?(?:yo|y/o|y\.o\.)(?!\w)"
    r"|(?<!\w)(?P<c>\d{1,3})[- ]?(?:jarige|jährige[mnrs]?)(?!\w)"
    r"|(?<!\w)(?:patiënte?|patient(?:in)?|pat\.|man|vrouw|mevrouw|meneer|mann|frau)(?:,? van)?"
    r",? (?P<d>\d{1,3}) (?:jaar(?: oud)?|jahre(?: alt)?|j\.)(?!\w)"
    r"|(?<!\w)(?P<e>\d{1,3}) (?:jaar oud|jahre alt)(?!\w)",
    _I,
)
_EXAM_WORD = re.compile(
    r"(?<!\w)(?:ct|cta|mri?|mrt|mra|x|xr|rx|rö|röntgen|roentgen|echo\w*|sono\w*|\w*sonogra\w*|"
    r"ultrasound|us|radiograph\w*|views?|mammogra\w*|\w*mammogra\w*|scan|pet|ebenen|"
    r"richtingen|opnamen?|angio\w*|doppler|duplex|scintigra\w*|szintigra\w*|tomogra\w*)(?!\w)",
    _I,
)
_NOT_IMAGED = re.compile(
    r"\s*(?:(?:is|was|wird|wurde|werd|wordt|ist)\s+)?(?:not (?:imaged|included|shown|visuali[sz]ed|"
    r"examined|in the field of view)|niet (?:afgebeeld|meegenomen|onderzocht|in beeld)|"
    r"nicht (?:abgebildet|erfasst|miterfasst|untersucht|dargestellt))(?!\w)",
    _I,
)
"""After a side and part: the ordered part is not in the images, which does not settle the
order's side."""
_TITLE_LABEL = re.compile(
    r"^\s*(?:exam(?:ination)?|procedure|study|onderzoek|untersuchung)\s*:\s*", _I
)
_OTHER_LABEL = re.compile(r"^\s*[\w .\-/]{1,30}:")
# body regions of an exam name (a word may name several: pelvis is abdomen and hip); Dutch and
# German words also open compounds ("Oberbauchsonographie", "Thoraxaufnahme", "Schultergelenk")
_REGIONS: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (pattern, frozenset(regions.split()))
    for pattern, regions in (
        (r"head|brain|skull|cranial|cerebr\w*|hersen\w*|schedel\w*|schädel\w*|schaedel\w*|"
         r"kopf\w*|hirn\w*|neurocran\w*|cct|cmrt|orbit\w*|sinus\w*", "head"),
        (r"neck|hals\w*|thyroid|schildklier\w*|schilddrüse\w*|schilddruese\w*|carotid\w*|"
         r"carotis", "neck"),
        (r"chest|thorax\w*|thoracic|lungs?|longen?|lunge\w*|thorakal|borstkas\w*|ribs?|ribben|"
         r"rippen\w*", "chest"),
        (r"heart|cardiac|hart|herz\w*|cor|coronar\w*|kardial", "chest heart"),
        (r"abdomen\w*|abdominal|abd|buik\w*|bauch\w*|bovenbuik\w*|onderbuik\w*|oberbauch\w*|"
         r"unterbauch\w*|liver|lever\w*|leber\w*|renal|kidneys?|nier\w*|appendix|gallbladder|"
         r"galblaas\w*|gallenblase\w*|pancreas|pankreas\w*|spleen|milt\w*|milz\w*|urinary|"
         r"bladder|blaas\w*|harnblase\w*", "abdomen"),
        (r"pelvis|pelvic|bekken\w*|becken\w*", "abdomen hip"),
        (r"prostate|prostaat\w*|prostata\w*|uterus|ovar\w*|transvaginal", "abdomen"),
        (r"scrotum|scrotal|skrotum\w*|testis|testes|testicular|hoden\w*", "scrotum"),
        (r"spine|spinal|lumbar|lumbaal|cervical|wervelkolom\w*|wirbelsäule\w*|lwk|cwk|twk|lws|"
         r"hws|bws|[lct]-?spine|sacrum|coccyx", "spine"),
        (r"breasts?|mamma\w*|mammogra\w*|mammo|borst|axilla", "breast"),
        (r"knees?|knie\w*|patella", "knee"),
        (r"hips?|heup\w*|hüft\w*|huefte?", "hip"),
        (r"femur|thigh|bovenbeen|oberschenkel\w*", "hip knee femur"),
        (r"tibia|fibula|lower leg|onderbeen|unterschenkel\w*", "knee ankle lowerleg"),
        (r"ankle|enkel|sprunggelenk\w*|osg|usg|malleol\w*", "ankle"),
        (r"foot|feet|voet\w*|fu(?:ß|ss)\w*|füße|calcane\w*|toes?|tenen|zehen?", "foot"),
        (r"shoulder|schouder\w*|schulter\w*|clavicle|clavicula|klavikula|sleutelbeen|scapula",
         "shoulder"),
        (r"humerus|upper arm|bovenarm|oberarm\w*", "shoulder elbow humerus"),
        (r"elbow|elleboog\w*|ellenbogen\w*", "elbow"),
        (r"forearm|onderarm|unterarm\w*|radius|ulna", "elbow wrist forearm"),
        (r"wrist|pols|handgelenk\w*|scaphoid", "wrist"),
        (r"hands?|handen|hand\w*|finger\w*|vinger\w*|thumb|duim|daumen", "hand"),
    )
)  # fmt: skip
_REGION_RE = re.compile(
    "|".join(f"(?P<r{i}>{pattern})" for i, (pattern, _) in enumerate(_REGIONS)).join(
        ("(?<!\\w)(?:", ")(?!\\w)")
    ),
    _I,
)
_SPINE_SEGMENTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (segment, re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", _I))
    for segment, pattern in (
        ("cervical", r"cervical|cervicale?|hws|cwk|c-?spine|halswirbels\w*|halswervel\w*"),
        ("thoracic", r"thoracic|thoracale?|bws|twk|t-?spine|brustwirbels\w*"),
        ("lumbar", r"lumbar|lumbale?|lumbaal|lws|lwk|l-?spine|lendenwirbels\w*|lendenwervel\w*|"
         r"lumbosacral|sacrum|sacral"),
    )
)  # fmt: skip
"""Segments of the spine an exam name states: a cervical report on a lumbar order is another
exam although both are "spine"."""
_AGE_HINT = re.compile(r"year|yrs?|yo|y/o|y\.o|jarig|jährig|jaar|jahre|j\.", _I)
_SEXES = {"male", "female"}


@dataclass(frozen=True)
class Patient:
    """What the message says about the patient and the order beside the text."""

    sex: str | None = None
    """Administrative gender (male, female, other, unknown) as PID-8 / Patient.gender gives it."""
    birth_date: date | None = None
    exam: str | None = None
    """The order as the RIS names it (OBR-4 / DiagnosticReport.code), e.g. "XR KNEE LEFT"."""
    report_date: date | None = None


def find_mismatches(doc: ReportText, patient: Patient) -> tuple[Mismatch, ...]:
    """The mismatches of one report with its order and patient (never raises on odd input)."""
    found = [
        _laterality(doc, patient.exam),
        _sex(doc, patient.sex),
        _age(doc, patient.birth_date, patient.report_date),
        _exam_type(doc, patient.exam),
    ]
    return tuple(m for m in found if m is not None)


def order_side(exam: str | None) -> str | None:
    """The one side an order names (left/right), None for none, both or bilateral."""
    if not exam or _ORDER_BOTH.search(exam):
        return None
    sides = {m.lastgroup for m in _SIDE.finditer(exam)}
    return sides.pop() if len(sides) == 1 else None


def _negated(doc: ReportText, start: int) -> bool:
    sentence_start, _ = doc.sentence_at(start)
    return _NEGATION.search(doc.text, sentence_start, start) is not None


def _not_imaged(doc: ReportText, end: int) -> bool:
    """Whether the part named just before `end` is said not to be in the images ("Linker heup
    niet afgebeeld", "left hip not included")."""
    return _NOT_IMAGED.match(doc.text, end) is not None


def _side_of(match: re.Match[str]) -> str:
    side = _SIDE.fullmatch(match.group("side1") or match.group("side2") or "")
    return "left" if side is not None and side.lastgroup == "left" else "right"


def _laterality(doc: ReportText, exam: str | None) -> Mismatch | None:
    ordered = order_side(exam)
    if ordered is None:
        return None
    first: re.Match[str] | None = None
    for match in _SIDE_PART.finditer(doc.text):
        side = _side_of(match)
        if side == ordered:
            if not _not_imaged(doc, match.end()):
                return None
            continue
        if first is None and not _negated(doc, match.start()):
            first = match
    if first is None:
        return None
    other = "right" if ordered == "left" else "left"
    return Mismatch(
        kind="laterality",
        expected=f"{ordered} (order: {exam})",
        found=other,
        evidence=_evidence(doc, first.start(), first.end()),
    )


def _sex(doc: ReportText, sex: str | None) -> Mismatch | None:
    if sex not in _SEXES:
        return None
    organs = _FEMALE if sex == "male" else _MALE
    for match in organs.finditer(doc.text):
        start, end = doc.sentence_at(match.start())
        if _negated(doc, match.start()) or _ABSENT_ORGAN.search(doc.text, start, end):
            continue
        return Mismatch(
            kind="sex",
            expected=str(sex),
            found=match.group(0).lower(),
            evidence=_evidence(doc, match.start(), match.end()),
        )
    return None


def age_at(birth: date, day: date) -> int:
    """Full years between `birth` and `day`."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def _age(doc: ReportText, birth: date | None, day: date | None) -> Mismatch | None:
    if birth is None or day is None or birth > day or not _AGE_HINT.search(doc.text):
        return None
    match = _AGE.search(doc.text)
    if match is None:
        return None
    stated = int(next(g for g in match.groups() if g is not None))
    actual = age_at(birth, day)
    if abs(stated - actual) <= 2:
        return None
    return Mismatch(
        kind="age",
        expected=f"{actual} years (from the birth date)",
        found=f"{stated} years",
        evidence=_evidence(doc, match.start(), match.end()),
    )


@functools.lru_cache(maxsize=1024)
def regions_of(name: str) -> frozenset[str]:
    """The body regions an exam name covers (empty when it names none this module knows)."""
    regions: set[str] = set()
    for match in _REGION_RE.finditer(name):
        regions |= _REGIONS[int(str(match.lastgroup)[1:])][1]
    return frozenset(regions)


def title_line(doc: ReportText) -> tuple[int, int] | None:
    """(start, end) of the report's exam title: its first line of text when that names an exam
    (an "EXAM:" label skipped), None when the report opens with another label or prose."""
    text = doc.raw
    start = len(text) - len(text.lstrip())
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    label = _TITLE_LABEL.match(text, start, end)
    if label:
        start = label.end()
    elif _OTHER_LABEL.match(text, start, end):
        return None
    line = text[start:end]
    if not line.strip() or len(line) > 90 or not _EXAM_WORD.search(line):
        return None
    return start, end


def spine_segments(name: str) -> frozenset[str]:
    """The spine segments (cervical, thoracic, lumbar) an exam name states."""
    return frozenset(segment for segment, pattern in _SPINE_SEGMENTS if pattern.search(name))


def _other_segment(exam: str, title: str) -> bool:
    """Whether the order and the report's title share only the spine, at segments both state
    and that differ ("MRT LWS" ordered, "MRT der HWS" reported)."""
    if regions_of(exam) & regions_of(title) != {"spine"}:
        return False
    ordered, reported = spine_segments(exam), spine_segments(title)
    return bool(ordered and reported and not ordered & reported)


def _exam_type(doc: ReportText, exam: str | None) -> Mismatch | None:
    if not exam:
        return None
    ordered = regions_of(exam)
    title = title_line(doc)
    if not ordered or title is None:
        return None
    reported = regions_of(doc.raw[title[0] : title[1]])
    if not reported or (reported & ordered and not _other_segment(exam, doc.raw[slice(*title)])):
        return None
    return Mismatch(
        kind="exam_type",
        expected=f"{', '.join(sorted(ordered))} (order: {exam})",
        found=", ".join(sorted(reported)),
        evidence=doc.span(*title),
    )


def _evidence(doc: ReportText, start: int, end: int) -> Span:
    """The title line when the mention lies in it, else the mention."""
    title = title_line(doc)
    if title is not None and title[0] <= start < title[1]:
        return doc.span(*title)
    return doc.span(start, end)
