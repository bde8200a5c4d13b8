"""Communications of a result: a sentence saying the result was passed on directly (phone, in
person, chat, "discussed with the patient"), with its recipient and time as written, and the
moment (`sent`) when the sentence states one unambiguous date and one clock time.

Requests ("please call"), future discussions ("will be discussed at the MDT") and routine
report transmission are not communications.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from mappings.insights.model import ResultCommunication
from workers.insights.text import ReportText, may_match

_TRIGGER = re.compile(
    r"(?<!\w)(?:discussed|communicated|informed|notified|reported (?:by \w+ )?to|called|paged|"
    r"relayed|conveyed|telephoned|phoned|read back|spoke (?:to|with)|spoken (?:to|with)|"
    r"contacted|made aware|alerted|demonstrated to|shown to|handed over|verbally (?:reported|given)|"
    r"ingelicht|op de hoogte (?:gebracht|gesteld)|contact opgenomen|teruggekoppeld|terugkoppeling|"
    r"overgedragen|doorgesproken|demonstriert|in kenntnis gesetzt|kontaktiert|weitergegeben|"
    r"befundweitergabe|gemeld|gesproken met|telefonisch overleg|doorgebeld|"
    r"doorgegeven|besproken|gebeld|geïnformeerd|medegedeeld|overlegd|"
    r"übermittelt|mitgeteilt|[\w-]*mitteilung|[\w-]*übermittlung|besprochen|informiert|benachrichtigt|"
    r"telefonisch an|durchgegeben|telefoniert|rücksprache|gesprochen|"
    r"befunde? (?:telefonisch |persönlich |mündlich )?an|information an|informatie aan)(?!\w)",
    re.IGNORECASE,
)
_NOT = re.compile(
    r"(?<!\w)(?:please|will be|to be|wird|werden|zal|graag|bitte|mdt|tumou?r ?board|"
    r"multidisciplinary|tumorboard|tumorkonferenz|mdo|not (?:been )?(?:discussed|communicated)|"
    r"niet besproken|nicht besprochen)(?!\w)",
    re.IGNORECASE,
)
_TITLED = re.compile(
    r"(?<!\w)(?:(?:Prof\.\s+)?(?:Dr|dr|DR|Mr|Mrs|Ms|Prof|PD Dr)\.?\s+(?:med\.\s+)?"
    r"(?:[A-Z]\.\s*)*(?:(?:van|de|der|den|von|Van|De|Von)\s+)*[A-Z][\w'’-]+"
    r"|(?:(?:ICU|ED|ER|IC|SEH|OR|Ward|ward|Charge|charge)\s+)?(?:Schwester|Pfleger|Sister|Nurse|NURSE|RN)"
    r"\s+[A-Z][\w'-]+"
    r"|(?:(?:CHARGE|STAFF|WARD|ICU|ED)\s+)?(?:NURSE|DR\.?)\s+(?:[A-Z]\.\s*)*[A-Z]+)"
)
_ROLE = re.compile(
    r"(?:\bwith|\bto|\baan|\bmet|\ban|\bmit)\s+((?:the|de|het|den|dem|die)\s+[^,.;()]{3,50}?)"
    r"(?=\s+(?:at|om|um|by|via|on(?![- ]call)|(?:op|am)(?=\s+\d)|per|who|telefonisch|besprochen|übermittelt|informiert|"
    r"mitgeteilt|gesprochen|benachrichtigt|besproken|overlegd|doorgegeven|gemeld|geïnformeerd)\b"
    r"|[,.;()]|$)",
    re.IGNORECASE,
)
_PATIENT = re.compile(
    r"(?<!\w)(?:the patient|patiënte?|de patiënt|dem patienten|der patientin)(?!\w)", re.I
)
_DATE = (
    r"(?:(?<![\d./-])\d{4}-\d{2}-\d{2}|(?<![\d./-])\d{1,2}[./-]\d{1,2}[./-]\d{2,4}"
    r"|\d{1,2}\.?\s+[A-Za-zäé]+\.?\s+\d{4})"
)
"""A date in a time as written: ISO, day first, or with its month named (never a part of one)."""
_TIME = re.compile(
    rf"(?:{_DATE}\s+(?:um|om|at)\s+)?"
    r"(?<![\d.])(?:(?:[01]?\d|2[0-3])[:.][0-5]\d(?![\d]|\.\d)"
    r"|(?:[01]?\d|2[0-3])(?=\s*(?:uur|Uhr|h)\b)|[01]\d[0-5]\d(?=\s*(?:h|hrs|hours)\b))"
    r"(?:\s*(?:uur|Uhr|u|h|hrs|hours|am|pm|a\.m\.|p\.m\.)(?!\w))?"
    rf"(?:\s+(?:on|op|am)\s+{_DATE})?"
)


_HEAD = (
    r"[\w-]*(?:team|surgery|surgeon|chirurgie|chirurg(?:en|in)?|ology|ologie|oloog|ologe|ologen|ologin|"
    r"ologist|arzt|arztes|ärztin|arts|nurse|registrar|resident|fellow|physician|clinician|attending|"
    r"consultant|doctor|intern|provider|service|dienst|kollegen?|kollegin|collega|verpleegkundige|"
    r"specialist|assistent\w*)"
)
"""The last word of a recipient named by a role ("ED physician", "de dienstdoende chirurg")."""
_ROLE_BARE = re.compile(
    rf"(?:\bwith|\bto|\baan|\bmet|\ban|\bmit)\s+((?:[\w-]+\s+){{0,3}}?{_HEAD})(?!\w)", re.IGNORECASE
)
"""A role after its preposition without an article ("discussed with ED physician")."""
_DATIVE = re.compile(
    rf"(?<!\w)((?:dem|der|den)\s+(?:[\w-]+\s+){{0,2}}?{_HEAD})(?!\w)", re.IGNORECASE
)
"""A German recipient in the dative without a preposition ("dem Stationsarzt mitgeteilt")."""
_SUBJECT = re.compile(
    r"(?:^|(?<=[.:;]\s))\s*((?:(?:the|de|het|der|die|das)\s+)?(?:[\w-]+\s+){0,2}?[\w-]*(?:team|surgery|surgeon|"
    r"chirurgie|chirurg(?:en)?|ology|ologie|oloog|ologe|ologist|arzt|ärztin|arts|nurse|registrar|"
    r"resident|fellow|physician|service|dienst))\s+(?:(?:was|were|has been|have been|is|wurde|wurden|"
    r"werd|werden|ist)\s+)?(?:(?:um|om|at)\s+\d{1,2}[:.]\d{2}\s*(?:uhr|uur|h)?\s+)?"
    r"(?:(?:telefonisch|by phone|by telephone|persönlich|direct|directly|direkt|mündlich|in person|"
    r"face to face|at the bedside|vor ort|am telefon|per telefon|ter plaatse|persoonlijk|mondeling)"
    r"\s+)?"
    r"(?:discussed|communicated|informed|notified|called|paged|contacted|informiert|benachrichtigt|"
    r"geïnformeerd|gebeld|ingelicht)(?!\w)",
    re.IGNORECASE,
)
"""A recipient named as the subject ("Stroke team notified", "Der diensthabende Urologe wurde um
01:50 Uhr telefonisch informiert", "Herzchirurgie um 18:20 Uhr informiert", "Gynäkologe vor Ort
informiert")."""
_ROLE_NOUN = re.compile(
    r"(?<!\w)(?:(?:the )?(?:referring|treating|ordering) (?:physician|clinician|team)|clinician|"
    r"kliniker\w*|stationsärzt\w*|stationsarzt|behandelnde[rn]? (?:arzt|ärztin|kollege|kollegin)|"
    r"zuweise\w*|aanvrager|behandelend arts|zaalarts|clinicus)(?!\w)",
    re.IGNORECASE,
)
"""A recipient named by its role alone ("Kliniker informiert", "Stationsarzt informiert")."""


def _recipient(sentence: str) -> str | None:
    titled = _TITLED.search(sentence)
    if titled:
        return titled.group(0).strip()
    role = _ROLE.search(sentence)
    if role:
        return role.group(1).strip()
    subject = _SUBJECT.search(sentence)
    if subject:
        return subject.group(1).strip()
    for pattern in (_ROLE_BARE, _DATIVE):
        bare = pattern.search(sentence)
        if bare:
            return bare.group(1).strip()
    noun = _ROLE_NOUN.search(sentence)
    if noun:
        return noun.group(0)
    patient = _PATIENT.search(sentence)
    return patient.group(0) if patient else None


_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan", "januari", "januar", "jänner"),
            ("february", "feb", "februari", "februar"),
            ("march", "mar", "maart", "märz", "maerz", "mrt"),
            ("april", "apr"),
            ("may", "mei", "mai"),
            ("june", "jun", "juni"),
            ("july", "jul", "juli"),
            ("august", "aug", "augustus"),
            ("september", "sep", "sept"),
            ("october", "oct", "oktober", "okt"),
            ("november", "nov"),
            ("december", "dec", "dezember", "dez"),
        ),
        start=1,
    )
    for name in names
}
_ISO_DATE = re.compile(r"(?<![\d./-])(\d{4})-(\d{2})-(\d{2})(?![\d./-])")
_DAY_FIRST = re.compile(r"(?<![\d./-])(\d{1,2})([./-])(\d{1,2})\2(\d{4})(?![\d./-])")
_NAMED = re.compile(
    r"(?<![\w.])(\d{1,2})\.?\s+([^\W\d_]{3,9})\.?,?\s+(\d{4})(?!\d)"
    r"|(?<!\w)([^\W\d_]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})(?!\d)"
)
_CLOCK = re.compile(
    r"(?<![\d.:/-])([01]?\d|2[0-3])[:.]([0-5]\d)(?![\d]|[./-]\d)"
    r"(?:\s*(am|pm|a\.m\.|p\.m\.)(?!\w))?",
    re.IGNORECASE,
)


def _dates(sentence: str, language: str | None) -> set[date]:
    """The calendar dates a sentence states unambiguously: ISO, a month named, or day first
    (dots always; dashes and slashes in Dutch or German, or with a day above 12)."""
    found: set[tuple[int, int, int]] = set()
    for match in _ISO_DATE.finditer(sentence):
        found.add((int(match.group(1)), int(match.group(2)), int(match.group(3))))
    for match in _DAY_FIRST.finditer(sentence):
        day, month = int(match.group(1)), int(match.group(3))
        if match.group(2) == "." or (language or "")[:2] in ("nl", "de") or day > 12:
            found.add((int(match.group(4)), month, day))
        else:
            return set()  # "02/03/2025" in English: March 2 or February 3
    for match in _NAMED.finditer(sentence):
        first = match.group(1) is not None
        day_text, name, year_text = (
            str(match.group(i)) for i in ((1, 2, 3) if first else (5, 4, 6))
        )
        named = _MONTHS.get(name.casefold())
        if named is not None:
            found.add((int(year_text), named, int(day_text)))
    dates: set[date] = set()
    for year, month, day in found:
        try:
            dates.add(date(year, month, day))
        except ValueError:
            continue
    return dates


def _sent(sentence: str, language: str | None) -> datetime | None:
    """The moment a communication sentence states: one date and one clock time, else None."""
    dates = _dates(sentence, language)
    clocks = {
        (int(m.group(1)), int(m.group(2)), (m.group(3) or "").replace(".", "").lower())
        for m in _CLOCK.finditer(_ISO_DATE.sub(" ", _DAY_FIRST.sub(" ", sentence)))
    }
    if len(dates) != 1 or len(clocks) != 1:
        return None
    hour, minute, half = clocks.pop()
    if half:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half == "pm" else 0)
    (day,) = dates
    return datetime(day.year, day.month, day.day, hour, minute)


def find_communications(doc: ReportText) -> tuple[ResultCommunication, ...]:
    """The communications this report states, in text order (one per sentence)."""
    found: list[ResultCommunication] = []
    if not may_match(doc, _TRIGGER):
        return ()
    for start, end in doc.sentences:
        sentence = doc.text[start:end]
        if not _TRIGGER.search(sentence) or _NOT.search(sentence):
            continue
        if doc.in_sections(start, frozenset({"history", "comparison"})):
            continue
        recipient = _recipient(sentence)
        time = _TIME.search(sentence)
        if recipient is None and time is None:
            continue
        found.append(
            ResultCommunication(
                recipient=recipient,
                time=time.group(0).strip() if time else None,
                sent=_sent(sentence, doc.language) if time else None,
                evidence=doc.span(start, end),
            )
        )
    return tuple(found)
