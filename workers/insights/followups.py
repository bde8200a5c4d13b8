"""Follow-up recommendations: a recommended future action of this report (imaging, biopsy,
consultation, other), with its modality, time frame, condition and guideline.

A sentence is a recommendation when it says so ("recommend", "advies", "empfohlen", "consider",
"Rec:", "Empfehlung:"), names a follow-up ("follow-up", "controle", "Kontrolle", "repeat",
"herhaling") or gives an action a future time frame ("Nächste Low-Dose-CT in 12 Monaten"), and is
not negated ("no follow-up needed", "geen aanvullend onderzoek nodig", "keine weitere Kontrolle
erforderlich") nor past or referenced (history/comparison line, "compared with the follow-up CT",
"referred for follow-up"). Each action of the sentence is one follow-up; two modalities joined
by "or" are one with no modality. A time frame goes to the imaging/biopsy actions before it in
its sentence (or the first after it; next to an imaging action, to the imaging actions only:
a biopsy named before "follow-up ultrasound in 12 months" is not timed); a short verbless
sentence that opens with an exam and states a condition ("MRI knee if symptoms persist.") is a
conditional recommendation; a sentence that only gives a time frame ("This should be
obtained in six weeks") completes the previous one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from mappings.insights.model import FollowUp, FollowUpKind
from workers.insights.text import INLINE_LABEL, ReportText, may_match
from workers.insights.timing import Interval, add_duration, find_intervals

_TRIGGER = re.compile(
    r"(?<!\w)(?:recommend\w*|advis\w*|advice|suggest\w*|consider\w*|should be (?:obtained|performed)|"
    r"warranted|indicated|rec:|advies|geadviseerd|aanbevol\w*|aanbeveling|advisable|ratsam|"
    r"zu empfehlen|(?:might|may|could|would) be (?:helpful|useful|of value)|aangeraden|overwe\w*|"
    r"empfohlen|empfehlung|empf\.|empfehl\w*|empfiehlt|angeraten|anzuraten|sinnvoll|erwägen|indiziert|"
    r"follow[- ]?up|f/u|(?-i:FU)|surveillance|repeat|controle\w*|herhaling|kontroll\w*|verlaufskontroll\w*|"
    r"nächste|next|verwijzing|vorstellung|konsil|referral|recall|voortzett\w*|fortsetz\w*|fortführ\w*|"
    r"continue (?:annual|routine|yearly|screening|surveillance)|return to (?:annual|routine|screening)|"
    r"further (?:evaluation|assessment|characteri[sz]ation|work-?up|imaging)|"
    r"additional (?:imaging|views?|evaluation)|aanvullend\w*|"
    r"ter (?:verdere )?(?:karakterisering|analyse|evaluatie)|weiter\w* abklärung|"
    r"zur (?:weiteren )?abklärung|ergänzend\w*)(?!\w)",
    re.IGNORECASE,
)
_NEGATED = re.compile(
    r"(?<!\w)(?:no (?:[\w-]+ ){0,2}(?:follow-?up|imaging|work-?up|biopsy|fna|surveillance)"
    r"|geen (?:[\w-]+ )?(?:follow-?up|controle|beeldvorming)|keine (?:[\w-]+ )?(?:kontrolle|verlaufskontrolle|bildgebung)"
    r"|(?:not|no longer) (?:needed|required|necessary|recommended|indicated|warranted)"
    r"|need\w* no|geen (?:verdere |aanvullende? |nadere )?\w+ (?:\w+ )?(?:nodig|geïndiceerd|noodzakelijk|vereist)"
    r"|keine (?:weitere |zusätzliche |weiterführende )?\w+ (?:\w+ )?(?:erforderlich|notwendig|nötig|indiziert)"
    r"|nicht (?:erforderlich|notwendig|nötig|indiziert)|(?:below|under) the (?:[\w-]+ )?thresholds?"
    r"|no need (?:for|of)|geen noodzaak|keine notwendigkeit|kein(?:e[rn]?)? (?:weitere[rn]? )?\w*bedarf"
    r"|entbehrlich|unnötig|überflüssig|unnecessary|niet zinvol|nicht sinnvoll"
    r"|onder de (?:[\w-]+ )?drempel\w*|unter(?:halb)? de[rs] (?:[\w-]+ )?(?:schwelle|grenzwert\w*)"
    r"|does not (?:meet|fulfil+) (?:the )?criteria|voldoet niet aan|erfüllt (?:nicht|keine))",
    re.IGNORECASE,
)
_PAST = re.compile(
    r"(?<!\w)(?:compared|comparison|vergeleken|vergelijking|im vergleich|referred|verwezen|"
    r"überwiesen|zugewiesen|prior|previous|eerdere|vorherige|voraufnahme|vom|van \d|of \d{4}|"
    r"dated|was performed|werd verricht|wurde durchgeführt)(?!\w)",
    re.IGNORECASE,
)
_NOT_ACTION = re.compile(
    r"(?<!\w)(?:clinical correlation|klinische correlatie|klinische korrelation|decompression|"
    r"repositioning|terugtrekken|zurückziehen|korrektur der lage)(?!\w)",
    re.IGNORECASE,
)
_BIOPSY = re.compile(
    r"(?<!\w)(?:[\w-]*biops\w*|FNA|FNAC|fine[- ]needle aspiration|[\w-]*punctie|[\w-]*punktion|"
    r"tissue (?:sampling|diagnosis)|weefselafname|gewebeprobe\w*|histologische sicherung|"
    r"stanzbiopsie|vakuumbiopsie|fusionsbiopsie|[\w-]*biopsie)(?!\w)",
    re.IGNORECASE,
)
_DRAINAGE = re.compile(
    r"(?<!\w)(?:[\w-]*drainage|drain placement|drainieren|draineren|[\w-]*drainering)(?!\w)",
    re.IGNORECASE,
)
"""A drainage: an action of kind other, with its guidance like a biopsy's."""
_NOT_THE_ACTION = re.compile(
    r"(?:\b(?:na|after|nach|following|post|bij|bei)\s+(?:[\w-]+\s+)?"
    r"|(?:consult\w*|overleg|bespreking|rücksprache|besprechung|discussion|discuss)[^,;.]{0,40}"
    r"\b(?:over|about|regarding|bezüglich|hinsichtlich|zwecks|betreffende|inzake)\s+(?:[\w-]+\s+)?)$",
    re.IGNORECASE,
)
"""Before a drainage that is a time anchor ("na drainage") or a consultation's topic ("overleg
met de chirurg over percutane drainage"), not an action of its own."""
_SECOND_TARGET = re.compile(
    r"\s+(?:of|van|von)\s+[^,;.]{1,40}?\s+(?:and|en|und)\s+(?:of|van|von)\s+", re.IGNORECASE
)
"""One biopsy of two targets, each with its preposition: two biopsies."""
_SHARED_HEAD = re.compile(
    r"(?<![\w-])[\w-]*(?:ology|ologie|ological|ologische|urgery|urgical|chirurgie|chirurgische)\s+"
    r"(?:and|en|und)\s+(?:[\w-]+\s+){1,2}$",
    re.IGNORECASE,
)
"""Two specialties sharing one consultation word ("oncology and spinal surgery referral")."""
_GUIDED_KINDS: tuple[tuple[FollowUpKind, re.Pattern[str]], ...] = (
    ("biopsy", _BIOPSY),
    ("other", _DRAINAGE),
)
_GUIDED_AFTER = re.compile(
    r"[^,;.]{0,30}?\b(?:under|unter|onder|with|mit|met)\s+(?:[\w-]+\s+){0,2}?"
    r"(?:[\w-]*(?:guidance|kontrolle|steuerung|geleide|begeleiding|leiding))\b",
    re.IGNORECASE,
)
"""The guidance named after a biopsy ("biopsy under ultrasound guidance")."""
_GUIDANCE: tuple[tuple[str | None, re.Pattern[str]], ...] = (
    (None, re.compile(r"targeted|fusion|gezielt|gericht", re.I)),
    ("US", re.compile(r"ultrasound|US-guided|echo|sonogra|sonograph", re.I)),
    ("MG", re.compile(r"stereota|tomosynthe", re.I)),
    ("MR", re.compile(r"\bMR|magnetic", re.I)),
    ("CT", re.compile(r"\bCT", re.I)),
)
_CONSULT = re.compile(
    r"(?<!\w)(?:[\w-]*consult\w*|referral|refer|verwijzing|verwijzen|doorverwijzing|"
    r"[\w-]*vorstellung|[\w-]*konsil\w*|sprechstunde|tumou?r ?board|mdt|mdo|tumorkonferenz|"
    r"multidisciplina\w*(?: (?:discussion|overleg|meeting|conference|team|board))?|overleg|"
    r"bespreking|[\w-]*besprechung|(?:\w+ische|fachärztliche) abklärung|beoordeling door|"
    r"[\w-]*(?:ologische|ologic(?:al)?|ology|ische) (?:evaluatie|evaluation|assessment|beoordeling|"
    r"review|opinion|mitbeurteilung))(?!\w)",
    re.IGNORECASE,
)
_OTHER = re.compile(
    r"(?<!\w)(?:colonoscopy|coloscopie|koloskopie|endoscopy|endoscopie|endoskopie|"
    r"gastroscop\w*|gastroskopie|ercp|cystoscop\w*|zystoskopie)(?!\w)",
    re.IGNORECASE,
)
_MODALITIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("PT", re.compile(r"(?<!\w)(?:PET[/-]?CT|PET[/-]?MRI?|PET|FDG-PET)(?!\w)", re.I)),
    ("NM", re.compile(r"(?<!\w)(?:bone scan|[\w-]*scintigra\w*|[\w-]*szintigra\w*|SPECT)(?!\w)", re.I)),
    ("MG", re.compile(r"(?<!\w)(?:[\w-]*mammogra\w*|[\w-]*mammografie|tomosynthes\w*|(?:spot(?:[- ]compression)?|magnification|tangential|rolled|mammographic) views?|(?:vergrößerungs|spot|spotkompressions)aufnahme\w*|(?:vergrotings|spot)opname\w*)(?!\w)", re.I)),
    ("MR", re.compile(r"(?<!\w)(?:[\w-]*MRI|[\w-]*MRT|MRCP|MRA|MR|[\w-]*-MRT?|MRT?-[\w-]+|magnetic resonance\w*|kernspin\w*)(?!\w)")),
    ("CT", re.compile(r"(?<!\w)(?:[\w-]*CT|CCT|CTA|CT-[\w-]+|LDCT|computed tomography|computertomogra\w*)(?!\w)")),
    ("US", re.compile(r"(?<!\w)(?:[\w-]*ultrasound\w*|ultrasonogra\w*|[\w-]*sonogra\w*|sono|echo|[\w-]*echogra\w*|[\w-]*ultraschall\w*|doppler\w*|duplex\w*|(?-i:US|CEUS|TVUS|TVU))(?!\w)", re.I)),
    ("CR", re.compile(r"(?<!\w)(?:[\w-]*radiograph\w*|x-?rays?|CXR|AXR|KUB|RX|plain films?|röntgenfoto\w*|[\w-]*röntgen\w*|röntgenkontrolle|[\w-]*-opname|opnamen|thoraxfoto|x-foto\w*|controlefoto\w*|x-thorax|[\w-]*serie|[\w-]*aufnahme\w*|röntgenaufnahme)(?!\w)", re.I)),
)  # fmt: skip
_ONE_PHRASE = re.compile(
    r"\s+(?:(?:in|im|at|to|naar|bij|zur|zum|in het|in de|an der|by the|the|de|het|der|die|das)\s+)*",
    re.IGNORECASE,
)
"""Between two consultation words of one phrase ("Vorstellung im Tumorboard")."""
_ALTERNATIVE_GAP = re.compile(r"\s+(?:or|of|oder|bzw\.)\s+(?:[\w-]+\s+){0,2}", re.IGNORECASE)
_CONDITION = re.compile(
    r"(?<!\w)(?:if|unless|should (?:symptoms|pain)|bij persisterende|bij aanhoudende|"
    r"bij (?:rokers|klachten)|zo nodig|indien|desgewenst|bei persistenz|bei beschwerdepersistenz|"
    r"bij (?:klinische |blijvende |toenemende )?(?:verdenking|twijfel|progressie|toename|verergering|pijn)|"
    r"bei (?:klinische[mnr]? |anhaltende[rnm]? |zunehmende[rnm]? )?(?:verdacht|beschwerden|progredienz|zunahme|schmerzen)|"
    r"in case of|in the event of|wenn|sofern|wanneer|as clinically (?:indicated|appropriate|warranted)|"
    r"bij (?:klinische )?indicatie|op indicatie|bei (?:klinischer )?indikation|je nach klinik|"
    r"depending on|afhankelijk van|abhängig von|im zweifel|bij twijfel|als (?:de )?(?:klachten|pijn|symptomen)|"
    r"should (?:the )?(?:symptoms?|pain|\w+) persist|"
    r"bei persistierende\w*|bei fehlender|ggf\.|gegebenenfalls|falls|bei bedarf|as needed|"
    r"when clinically indicated|eventueel|eventuell|optional\w*)(?!\w)",
    re.IGNORECASE,
)
_NOT_CONDITION = re.compile(r"(?<!\w)(?:earlier|sooner|früher|eerder|sofort)(?!\w)", re.IGNORECASE)
_GUIDELINES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Fleischner", re.compile(r"fleischner", re.I)),
    ("ACR TI-RADS", re.compile(r"TI-?RADS", re.I)),
    ("Lung-RADS", re.compile(r"lung-?rads", re.I)),
    (
        "LI-RADS",
        re.compile(r"LI-?RADS|\bLR-(?:\d|M|TIV)\s+(?:observation|lesion|läsion|laesie)", re.I),
    ),
    ("O-RADS", re.compile(r"O-?RADS", re.I)),
    ("BI-RADS", re.compile(r"BI-?RADS", re.I)),
)
_FOLLOWUP_NOUN = re.compile(
    r"(?<!\w)(?<!clinical )(?<!klinische )(?:follow[- ]?up|surveillance|(?:verlaufs)?kontrolle|"
    r"controle|control|re-?evaluation|reassessment|herhaling|screening|re-?imaging|"
    r"(?:repeat |further |additional |aanvullende |verdere |weitere |erneute )?(?:imaging|beeldvorming|"
    r"bildgebung)|repeat(?: (?:study|examination|exam|scan))?)(?!\w)",
    re.IGNORECASE,
)
"""A follow-up named without its exam ("Kontrolle in 1 Jahr."): imaging of no stated modality."""
_RECOMMEND_VERB = re.compile(
    r"(?<!\w)(?:recommend\w*|advis\w*|suggest\w*|consider\w*|advies|geadviseerd|aanbevol\w*|"
    r"aangeraden|overwe\w*|empfohlen|empfehl\w*|angeraten|anzuraten|erwägen|ratsam)(?!\w)",
    re.IGNORECASE,
)
"""A verb that recommends: a follow-up named without its exam is one even with no time frame
("Further imaging is recommended.")."""
_CONDITION_START = re.compile(r"\s*(?:if|indien|als|falls|wenn|sollte|should)\b", re.IGNORECASE)
"""A sentence that opens with a condition right after a recommendation ("Indien geen MRI mogelijk,
een CT met contrast.") gives its conditional alternative."""
_TRAILING_CONDITION = re.compile(
    r"\s*(?:if|indien|als|falls|wenn|sofern|unless|zo nodig|ggf\.|bei bedarf)(?!\w)", re.IGNORECASE
)
"""The clause after the action's that makes it conditional ("..., wenn klinisch indiziert")."""
_CONTINUES = re.compile(
    r"^\s*(?:this|it|these|dit|deze|dies|diese|sie|(?:suggested |recommended )?interval|timing|"
    r"preferably|ideally|bij voorkeur|zeitpunkt|idealerweise|vorzugsweise|am besten|termijn)\b",
    re.IGNORECASE,
)
_INTERVAL_NOUN = re.compile(
    r"(?<!\w)(?:interval|timing|time ?frame|termijn|tijdsinterval|intervall|zeitraum|zeitpunkt|"
    r"zeitabstand)(?!\w)",
    re.IGNORECASE,
)
"""A sentence without an action that names the interval ("Suggest an interval of 12 months.")
gives the time frame of the previous recommendation."""
_TELEGRAPHIC_WORDS = 6
_CONDITIONAL_WORDS = 8
"""At most this many words in a telegraphic conditional recommendation ("MRI knee if symptoms
persist.")."""
_FINITE = re.compile(
    r"(?<!\w)(?:was|were|is|are|has|had|been|wurde|wurden|werd|werden|ist|sind|hat|zijn|heeft|"
    r"besproken|besprochen|discussed|erfolgt|gepland|geplant|planned|scheduled)(?!\w)",
    re.IGNORECASE,
)
"""Verbs that make a sentence a statement (past or planned), not a telegraphic recommendation."""
_IMPERATIVE = re.compile(
    r"(?:discuss|present|refer|bespreken|presenteren|verwijzen|besprechen|vorstellen)\s+"
    r"(?:(?:at|in|to|with|for|bij|aan|naar|im|in der|zur|zum|an|the|de|het|der|die|das|dem|den)\s+)*",
    re.IGNORECASE,
)
"""An imperative that opens a telegraphic consultation ("Discuss at the tumour board.")."""
_FIRST_WORD = re.compile(r"[\w-]+\s+")
_TIME_ONLY_WORDS = 5
"""A sentence of at most this many words that gives a time frame ("Over 3 maanden.") completes
the previous recommendation too."""
_CLAUSE = re.compile(r",|;|\s(?:or|of|oder|and|en|und)\s", re.IGNORECASE)
_HISTORY = frozenset({"history", "comparison"})
_TIME_WORD = re.compile(
    r"(?:day|week|month|year|dag|wek|weken|maand|jaar|tag|woche|wöch|monat|jahr|jährlich|annual|"
    r"tomorrow|morgen|folgetag|jaarlijks)",
    re.IGNORECASE,
)
"""A word every time frame holds (`workers.insights.timing`): sentences without one are not
read for a time frame."""


@dataclass
class _Action:
    kind: FollowUpKind
    modality: str | None
    start: int
    end: int
    text: str
    interval: Interval | None = None
    evidence: tuple[int, int] = (0, 0)
    conditional: bool = False
    guideline: str | None = None
    extra: list[int] = field(default_factory=list)
    named_only: bool = False
    """A follow-up named without its exam ("Controle wordt geadviseerd.")."""


def _free(taken: list[tuple[int, int]], start: int, end: int) -> bool:
    return not any(s < end and start < e for s, e in taken)


def _guidance(before: str) -> str | None:
    for modality, pattern in _GUIDANCE:
        if pattern.search(before):
            return modality
    return None


def _actions(doc: ReportText, start: int, end: int) -> list[_Action]:
    """The actions named in `text[start:end]`, in text order."""
    text = doc.text
    actions: list[_Action] = []
    taken: list[tuple[int, int]] = []
    guided = [
        (kind, m)
        for kind, p in _GUIDED_KINDS
        if may_match(doc, p)
        for m in p.finditer(text, start, end)
    ]
    for kind, match in sorted(guided, key=lambda item: item[1].start()):
        if kind == "other" and _NOT_THE_ACTION.search(
            text, max(start, match.start() - 60), match.start()
        ):
            continue  # "Controle-opname na drainage", "Overleg met de chirurg over percutane drainage"
        phrase_start = max(start, match.start() - 30)
        before = text[phrase_start : match.end()]
        cut = max(before.rfind(","), before.rfind(":"), before.rfind(" and "), before.rfind(" en "))
        before = before[cut + 1 :] if cut >= 0 else before
        modality, end_taken = _guidance(before), match.end()
        after = _GUIDED_AFTER.match(text, match.end(), end)
        if after is not None:  # "Stanzbiopsie links unter sonographischer Kontrolle"
            modality, end_taken = _guidance(after.group(0)) or modality, after.end()
        previous = actions[-1] if actions else None
        if (
            previous is not None
            and previous.kind == kind
            and _ALTERNATIVE_GAP.fullmatch(text[previous.end : match.start()])
        ):  # "gerichte biopsie of fusiebiopsie": one biopsy, two ways
            if previous.modality != modality:
                previous.modality = None
            previous.end, previous.text = match.end(), text[previous.start : match.end()]
        else:
            actions.append(_Action(kind, modality, match.start(), match.end(), match.group(0)))
            if _SECOND_TARGET.match(text, match.end(), end):  # "biopsie van de massa en van ..."
                actions.append(_Action(kind, modality, match.start(), match.end(), match.group(0)))
        taken.append((match.end() - len(before), end_taken))
    for kind, pattern in (("consultation", _CONSULT), ("other", _OTHER)):
        if not may_match(doc, pattern):
            continue
        for match in pattern.finditer(text, start, end):
            if not _free(taken, *match.span()):
                continue
            previous = actions[-1] if actions else None
            if (
                kind == "consultation"
                and previous is not None
                and previous.kind == "consultation"
                and _ONE_PHRASE.fullmatch(text[previous.end : match.start()])
            ):  # "Vorstellung im Tumorboard", "bespreking in het multidisciplinair overleg"
                previous.end, previous.text = match.end(), text[previous.start : match.end()]
            else:
                shared = (
                    _SHARED_HEAD.search(text, start, match.start())
                    if kind == "consultation"
                    else None
                )
                if shared is not None:  # "oncology and spinal surgery referral": two referrals
                    actions.append(_Action(kind, None, shared.start(), match.end(), match.group(0)))
                actions.append(_Action(kind, None, *match.span(), match.group(0)))
            taken.append(match.span())
    imaging: list[_Action] = []
    for modality, pattern in _MODALITIES:
        if not may_match(doc, pattern):
            continue
        for match in pattern.finditer(text, start, end):
            if _free(taken, *match.span()):
                imaging.append(_Action("imaging", modality, *match.span(), match.group(0)))
                taken.append(match.span())
    imaging.sort(key=lambda a: a.start)
    merged: list[_Action] = []
    for action in imaging:
        previous = merged[-1] if merged else None
        gap = text[previous.end : action.start] if previous else ""
        if previous is not None and previous.modality == action.modality and gap.strip() in "/":
            previous.end, previous.text = action.end, text[previous.start : action.end]
            continue
        if previous is not None and (
            (_ALTERNATIVE_GAP.fullmatch(gap) and "," not in gap) or gap.strip() == "/"
        ):
            previous.modality = None if previous.modality != action.modality else action.modality
            previous.end, previous.text = action.end, text[previous.start : action.end]
            continue
        merged.append(action)
    return sorted([*actions, *merged], key=lambda a: a.start)


def _clause(text: str, start: int, end: int, position: int) -> tuple[int, int]:
    low, high = start, end
    for match in _CLAUSE.finditer(text, start, end):
        if match.end() <= position:
            low = match.end()
        elif match.start() >= position:
            high = match.start()
            break
    return low, high


def _conditional(text: str, start: int, end: int, action: _Action) -> bool:
    low, high = (start, end)
    comma_low = text.rfind(",", start, action.start)
    comma_high = text.find(",", action.end, end)
    clause = text[
        comma_low + 1 if comma_low >= 0 else low : comma_high if comma_high >= 0 else high
    ]
    if comma_low >= 0:  # "If symptoms persist, consider ..."
        first = text[start:comma_low]
        if re.match(r"\s*(?:if|bij|bei|falls|indien|should)\b", first, re.IGNORECASE):
            clause = first + " " + clause
    if comma_high >= 0:  # "MRT-Kontrolle in 3 Monaten, wenn klinisch indiziert."
        following = text[comma_high + 1 : end]
        following = following[: following.find(",")] if "," in following else following
        names_action = any(
            p.search(following) for p in (_BIOPSY, _CONSULT, _OTHER, *(m for _, m in _MODALITIES))
        )
        if _TRAILING_CONDITION.match(following) and not names_action:
            clause = clause + " " + following
    for match in _CONDITION.finditer(clause):
        if not _NOT_CONDITION.search(clause[max(0, match.start() - 15) : match.start()]):
            return True
    return False


def _assign_intervals(actions: list[_Action], intervals: list[Interval]) -> None:
    timed = [a for a in actions if a.kind in ("imaging", "biopsy")]
    for interval in intervals:
        before = [a for a in timed if a.end <= interval.start and a.interval is None]
        # only the actions since the previous interval or consultation
        group: list[_Action] = []
        for action in reversed(before):
            between = [a for a in actions if action.end <= a.start < interval.start]
            if any(a.kind not in ("imaging", "biopsy") for a in between):
                break
            group.append(action)
        if group and group[0].kind == "imaging":
            # "fine-needle aspiration and follow-up ultrasound in 12 months": the interval is
            # the imaging's next to it, not the biopsy's before it
            group = [action for action in group if action.kind == "imaging"]
        if not group:
            after = [a for a in timed if a.start >= interval.end and a.interval is None]
            group = after[:1]
        for action in group:
            action.interval = interval


def _due(action: _Action, report_date: date | None) -> dict[str, date | None]:
    if action.interval is None or report_date is None:
        return {}
    durations = action.interval.durations
    if len(durations) == 2:
        return {
            "due_start": add_duration(report_date, durations[0]),
            "due_end": add_duration(report_date, durations[1]),
        }
    return {"due": add_duration(report_date, durations[0])}


def _is_recommendation(
    doc: ReportText, start: int, end: int, actions: list[_Action], labelled: bool
) -> bool:
    sentence = doc.text[start:end]
    if doc.in_sections(start, _HISTORY) or _NEGATED.search(sentence):
        return False
    first = min(actions, key=lambda a: a.start)
    # "Compared with the prior CT, recommend MRI": a trigger after the past words; "This study was
    # performed as a 12 month follow-up": the study itself, nothing recommended after it
    if _PAST.search(doc.text[start : first.start]) and not _TRIGGER.search(
        doc.text[first.start if first.kind != "imaging" or first.modality else first.end : end]
    ):
        return False
    if labelled or _TRIGGER.search(sentence):
        return True
    return bool(find_intervals(doc.text, start, end))


def _telegraphic_consultation(text: str, start: int, end: int) -> bool:
    """A short verbless sentence that opens with a consultation ("Bespreking in het MDO HCC.",
    "Urology referral.") or with an imperative before it ("Discuss at the multidisciplinary
    tumour board."): a recommendation in telegraphic style."""
    sentence = text[start:end].strip()
    if sentence.count(" ") >= _TELEGRAPHIC_WORDS * 2:
        return False  # surely more than six words: no need to split it
    opening = _CONSULT.match(sentence) or _FIRST_WORD.match(sentence)
    if opening is None or len(sentence.split()) > _TELEGRAPHIC_WORDS or _FINITE.search(sentence):
        return False
    if _CONSULT.match(sentence) or _CONSULT.match(sentence, opening.end()):
        return True
    imperative = _IMPERATIVE.match(sentence)
    return bool(imperative and _CONSULT.match(sentence, imperative.end()))


_ACTION_OPENING = re.compile(
    r"\s*(?:(?:further|dedicated|repeat|additional|aanvullende?|verdere?|weitere|erneute)\s+)?"
    r"(?=\S)",
    re.IGNORECASE,
)
"""What may come before the exam that opens a telegraphic conditional recommendation."""


def _telegraphic_conditional(text: str, start: int, end: int) -> bool:
    """A short verbless sentence that opens with an exam and states its condition ("MRI knee if
    symptoms persist.", "CT bij aanhoudende klachten.", "MRT bei Beschwerdepersistenz."): a
    conditional recommendation in telegraphic style."""
    sentence = text[start:end].strip()
    if sentence.count(" ") >= _TELEGRAPHIC_WORDS * 2 or len(sentence.split()) > _CONDITIONAL_WORDS:
        return False
    opening = _ACTION_OPENING.match(sentence)
    at = opening.end() if opening else 0
    opens = any(p.match(sentence, at) for p in (_BIOPSY, *(pattern for _, pattern in _MODALITIES)))
    return opens and not _FINITE.search(sentence) and bool(_CONDITION.search(sentence))


def find_followups(doc: ReportText, report_date: date | None) -> tuple[FollowUp, ...]:
    """The follow-up recommendations of this report, in text order."""
    if not (
        may_match(doc, _TRIGGER)
        or may_match(doc, _TIME_WORD)
        or may_match(doc, INLINE_LABEL)
        or may_match(doc, _CONSULT)
        or may_match(doc, _CONDITION)
    ):
        return ()  # no sentence can be a recommendation or give a time frame
    found: list[_Action] = []
    previous: list[_Action] = []
    for sentence_start, end in doc.sentences:
        if end <= doc.title_end:
            continue  # the exam's title ("... SCREENING, ANNUAL") recommends nothing
        start = doc.after_label(sentence_start)
        labelled = start != sentence_start or bool(
            previous and _CONDITION_START.match(doc.text, start, end)
        )
        labelled = labelled or (
            may_match(doc, _CONSULT) and _telegraphic_consultation(doc.text, start, end)
        )
        labelled = labelled or (
            may_match(doc, _CONDITION) and _telegraphic_conditional(doc.text, start, end)
        )
        triggered = labelled or (
            may_match(doc, _TRIGGER) and bool(_TRIGGER.search(doc.text, start, end))
        )
        timed = triggered or (
            may_match(doc, _TIME_WORD) and _TIME_WORD.search(doc.text, start, end)
        )
        intervals = find_intervals(doc.text, start, end) if timed else []
        if not (triggered or intervals):
            previous = []  # neither a recommendation nor the time frame of the previous one
            continue
        if _NOT_ACTION.search(doc.text, start, end) and not _BIOPSY.search(doc.text, start, end):
            previous = []
            continue
        actions = _actions(doc, start, end)
        if not actions:
            pending = [a for a in previous if a.interval is None and a.kind == "imaging"]
            sentence = doc.text[start:end]
            if (
                intervals
                and pending
                and (
                    _CONTINUES.match(sentence)
                    or _INTERVAL_NOUN.search(sentence)
                    or len(sentence.split()) <= _TIME_ONLY_WORDS
                )
            ):
                for action in pending:
                    action.interval = intervals[0]
                    action.evidence = (action.evidence[0], end)
                previous = []
                continue
            conditioned = bool(_CONDITION.search(doc.text, start, end))
            advised = bool(_RECOMMEND_VERB.search(doc.text, start, end))
            noun = (
                _FOLLOWUP_NOUN.search(doc.text, start, end)
                if intervals or conditioned or advised
                else None
            )
            if noun is None:
                previous = []
                continue
            actions = [_Action("imaging", None, *noun.span(), noun.group(0), named_only=True)]
        condition = _CONDITION_START.match(doc.text, start, end)
        comma = doc.text.find(",", start, end) if condition else -1
        if comma >= 0 and any(a.start > comma for a in actions):
            # "If MRI is not possible, CT with contrast": the condition's exam is not advised
            actions = [a for a in actions if a.start > comma]
        if not _is_recommendation(doc, start, end, actions, labelled):
            previous = []
            continue
        _assign_intervals(actions, intervals)
        guideline = next((name for name, p in _GUIDELINES if p.search(doc.text, start, end)), None)
        evidence_start = start
        if (
            len(previous) == 1
            and previous[0].named_only
            and previous[0] in found
            and _CONTINUES.match(doc.text[start:end])
        ):  # "Controle wordt geadviseerd. Bij voorkeur met een CT over zes maanden.": one follow-up
            found.remove(previous[0])
            evidence_start = previous[0].evidence[0]
        for action in actions:
            action.evidence = (evidence_start, end)
            action.conditional = _conditional(doc.text, start, end, action)
            action.guideline = guideline
        found.extend(actions)
        previous = actions
    return tuple(
        FollowUp(
            kind=action.kind,
            modality=action.modality,
            procedure_text=action.text,
            interval=action.interval.durations if action.interval else (),
            conditional=action.conditional,
            guideline=action.guideline,
            evidence=doc.span(*action.evidence),
            **_due(action, report_date),
        )
        for action in found
    )
