"""Sizes stated for a finding: "8 mm nodule", "3.2 x 2.1 cm", "2,2 cm", "11 mm großer Rundherd".

A size is one to three numbers joined by "x" (decimal point or comma) and a unit, mm or cm
("1.4 x 0.9 x 1.1 cm", "2.4 cm x 1.6 cm", "12x9mm"). A range or a group ("4-7 mm", "3 à 5 mm",
"up to 14 mm") gives its largest value. Left out: a prior exam's value ("previously 6 mm",
"eerder 1,1 cm", "vorbeschrieben 9 mm", "in der Voruntersuchung 12 mm": a prior word between
the previous size, or the clause start, and this one), a wall thickness ("wall thickened to
5 mm", "wandverdikt tot 5 mm"; a diameter named after the wall word is the finding's:
"wandverdickte Appendix mit einem Durchmesser von 11 mm") and a distance ("2 cm van de tepel",
"4 cm above the carina"; its "from" is no prior word for the size after it: "4 cm from the
nipple: 7 mm mass").

A size belongs to a finding mention of its own clause (the ConText unit the mention was
asserted in) with no other size in between: the nearest one after it when the size opens a noun
phrase ("a 9 mm cyst", "with 6 mm midline shift", "Left lobe: 8 mm nodule", "11 mm großer
Rundherd") and no ",;:()" lies between, else the nearest one before it ("nodule measuring 1.4 cm",
"Breite 9 mm"), else the nearest one after it. On a tie the longer mention wins, then the one
listed later (the caller lists mentions in template order, and a template declares an umbrella
finding before its parts: a subdural haematoma's size is the subdural's). A size with no mention
of its own goes to the finding of the size before it when only a side lies between ("links
16 mm ..., rechts 7 mm"), or, in a list item ("- rechts onderpool: solide, 17 mm"), to the
finding its list opened with ("met meerdere noduli:"). The size is kept only when that finding is
present or uncertain and takes a size; a restatement (the same largest dimension for the same
finding, e.g. in the impression) is not a new size. Units are kept as stated (UCUM mm / cm).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mappings.report import Evidence, FindingStatus, Measurement, SizeUnit

_NUM = r"\d+(?:[.,]\d+)?"
_UNIT = r"(?:mm|cm)"
_SIZE = re.compile(
    rf"(?<![\w.,])(?:{_NUM}\s*(?:-|–|to|tot|à|bis)\s*)?"
    rf"(?P<dims>{_NUM}(?:\s*{_UNIT})?(?:\s*[x×*]\s*{_NUM}(?:\s*{_UNIT})?){{0,2}})"
    rf"\s*(?P<unit>{_UNIT})(?![\w²³/])",
    re.IGNORECASE,
)
_NUMBER = re.compile(_NUM)
_PRIOR = re.compile(
    r"\b(?:previously|previous|prior|formerly|before|compared|from|was|vs\.?|versus"
    r"|eerder|voorheen|vroeger|destijds|vorig\w*"
    r"|vorher|vormals|vorbeschrieben|voruntersuchung|voraufnahme|zuvor|damals|früher)\b",
    re.IGNORECASE,
)
_DISTANCE = re.compile(
    r"\s*(?:from|above|below|beyond|proximal to|distal to|of the (?:carina|nipple)"
    r"|van de (?:tepel|carina)|boven|onder|vanaf|vom|von der|oberhalb|unterhalb|ab)\b",
    re.IGNORECASE,
)
_WALL = re.compile(
    r"\b(?:wall|wand\w*|\w+(?<!hinter)(?<!vorder)(?<!seiten)(?<!achter)(?<!voor)(?<!zij)wand"
    r"(?:dicke|stärke|dikte)?)\b",
    re.IGNORECASE,
)
"""A wall thickness ("wall thickened to 5 mm", "wandverdikt tot 5 mm", "Gallenblasenwand verdickt
auf 6 mm") is not the finding's size; a site on a wall ("Myom an der Hinterwand") is no wall."""
_DIAMETER = re.compile(
    r"\b(?:diameter|durchmesser|doorsnede|kaliber|caliber|calibre|size|größe|grootte)\b|Ø",
    re.IGNORECASE,
)
"""A diameter word after the wall word: the size is the finding's ("wandverdickte Appendix mit
einem Durchmesser von 11 mm"), not its wall's."""
_MAX_MM = 400.0


class SizedMention(Protocol):
    """What a size is attached to: a finding mention and the clause it was asserted in."""

    @property
    def variable_id(self) -> str: ...
    @property
    def status(self) -> FindingStatus: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def clause_start(self) -> int: ...
    @property
    def clause_end(self) -> int: ...


@dataclass(frozen=True)
class SizeHit:
    """One size in the text: its dimensions and unit as written and where it stands."""

    dims: tuple[float, ...]
    unit: SizeUnit
    start: int
    end: int


def _number(raw: str) -> float:
    return float(raw.replace(",", "."))


def size_hits(text: str, start: int, end: int) -> list[SizeHit]:
    """The sizes in `text[start:end]` (offsets into `text`), prior values and distances left out."""
    hits: list[SizeHit] = []
    previous_end = start
    for match in _SIZE.finditer(text, start, end):
        before = text[previous_end : match.start()]
        previous_end = match.end()
        distance = _DISTANCE.match(text, match.end(), end)
        if distance:
            previous_end = distance.end()  # its "from" is no prior word for the next size
            continue
        if _PRIOR.search(before) or _wall(before):
            continue
        dims = tuple(_number(n) for n in _NUMBER.findall(match["dims"]))
        unit: SizeUnit = "cm" if match["unit"].lower() == "cm" else "mm"
        scale = 10.0 if unit == "cm" else 1.0
        if not all(0 < d * scale <= _MAX_MM for d in dims):
            continue
        hits.append(SizeHit(dims, unit, match.start(), match.end()))
    return hits


def _wall(before: str) -> bool:
    """Whether the text before a size makes it a wall thickness (a wall word with no diameter
    word after it)."""
    ends = [wall.end() for wall in _WALL.finditer(before)]
    return bool(ends) and not _DIAMETER.search(before, ends[-1])


def _all_sizes(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return [m.span() for m in _SIZE.finditer(text, start, end)]


_FORWARD = re.compile(
    r"(?:^|[:(]|\b(?:a|an|the|with|and|plus|een|de|het|met|en|ein|eine|einer|einem|einen|eines"
    r"|der|die|das|den|dem|mit|und|sowie))\s*$",
    re.IGNORECASE,
)
_PHRASE_BREAK = re.compile(r"[,;:()]")
_LIST_ITEM = re.compile(r"\s*(?:[-•*–]|\d{1,2}[.)])\s")
_NEXT_SIDE = re.compile(
    r"^[^.;]*[,;(]\s*(?:and\s+|en\s+|und\s+)?(?:on the\s+)?"
    r"(?:left|right|links|rechts|li\.?|re\.?)\b[^,;()]*$",
    re.IGNORECASE,
)
"""A size listed after another one with only a side in between ("links 16 mm ..., rechts 7 mm"):
the same finding's other instance."""


def _forward(text: str, clause_start: int, hit: SizeHit) -> bool:
    """True when the size opens a noun phrase ("a 9 mm cyst", "with 6 mm midline shift",
    "Left lobe: 8 mm nodule", "11 mm großer Rundherd"): it then measures what follows."""
    return _FORWARD.search(text[clause_start : hit.start]) is not None


def _owner(
    text: str,
    clause_start: int,
    hit: SizeHit,
    mentions: Sequence[SizedMention],
    sizes: list[tuple[int, int]],
) -> SizedMention | None:
    """The mention a size measures, in its clause and with no other size in between: the
    nearest one after it when the size opens a noun phrase (and none of ",;:()" lies between),
    else the nearest one before it (a mention that holds the size counts from its start), else
    the nearest one after it; on a tie the longer mention, then the one listed later."""
    before: list[tuple[int, int, int, SizedMention]] = []
    after: list[tuple[int, int, int, SizedMention]] = []
    for index, mention in enumerate(mentions):
        if not mention.clause_start <= hit.start < mention.clause_end:
            continue
        low, high = (
            (mention.end, hit.start) if mention.start < hit.start else (hit.end, mention.start)
        )
        if any(low <= a and b <= high for a, b in sizes):
            continue
        rank = (-(mention.end - mention.start), -index)
        if mention.start < hit.start:
            gap = hit.start - mention.end if mention.end <= hit.start else hit.start - mention.start
            before.append((gap, *rank, mention))
        elif mention.start >= hit.end:
            after.append((mention.start - hit.end, *rank, mention))
    phrase = [c for c in after if not _PHRASE_BREAK.search(text, hit.end, c[3].start)]
    order = (phrase, before, after) if _forward(text, clause_start, hit) else (before, after)
    for candidates in order:
        if candidates:
            return min(candidates, key=lambda c: c[:3])[3]
    return None


def _list_head(
    text: str, clause: tuple[int, int], mentions: Sequence[SizedMention], sized: frozenset[str]
) -> SizedMention | None:
    """The finding a list is about: the last present or uncertain sized mention of a clause
    that ends with ":" ("met meerdere noduli:")."""
    if not text[clause[0] : clause[1] + 1].rstrip().endswith(":"):
        return None
    inside = [
        m
        for m in mentions
        if (m.clause_start, m.clause_end) == clause
        and m.variable_id in sized
        and m.status in (FindingStatus.PRESENT, FindingStatus.UNCERTAIN)
    ]
    return max(inside, key=lambda m: m.start, default=None)


def finding_sizes(
    text: str,
    quote_text: str,
    spans: Sequence[tuple[int, int]],
    mentions: Sequence[SizedMention],
    sized: Iterable[str],
) -> dict[str, tuple[Measurement, ...]]:
    """Per variable of `sized` (the findings that take a size), the sizes its present or
    uncertain mentions own. `text` is the report read with wrapped line breaks as spaces,
    `quote_text` the report as written (same offsets), `spans` its clauses: the evidence quote is
    the size itself. A list item ("- right lower pole: solid, 17 mm") with no finding of its own
    measures the finding its list opened with ("multiple nodules:")."""
    takes_size = frozenset(sized)
    found: dict[str, list[Measurement]] = {}
    list_owner: SizedMention | None = None
    for clause_start, clause_end in spans:
        if not _LIST_ITEM.match(text, clause_start, clause_end):
            list_owner = None
        sizes = _all_sizes(text, clause_start, clause_end)
        previous: tuple[SizeHit, SizedMention | None] | None = None
        for hit in size_hits(text, clause_start, clause_end):
            owner = _owner(text, clause_start, hit, mentions, sizes)
            if (
                owner is None
                and previous is not None
                and _NEXT_SIDE.search(text[previous[0].end : hit.start])
            ):
                owner = previous[1]
            if owner is None:
                owner = list_owner
            previous = (hit, owner)
            if (
                owner is None
                or owner.variable_id not in takes_size
                or owner.status not in (FindingStatus.PRESENT, FindingStatus.UNCERTAIN)
            ):
                continue
            measurement = Measurement(
                dims=hit.dims,
                unit=hit.unit,
                evidence=Evidence(
                    quote=quote_text[hit.start : hit.end], start=hit.start, end=hit.end
                ),
            )
            kept = found.setdefault(owner.variable_id, [])
            if any(max(m.dims_mm) == max(measurement.dims_mm) for m in kept):
                continue  # a restatement of a size already given
            kept.append(measurement)
        list_owner = (
            _list_head(text, (clause_start, clause_end), mentions, takes_size) or list_owner
        )
    return {variable: tuple(sizes) for variable, sizes in found.items()}
