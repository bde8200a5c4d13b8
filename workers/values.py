"""Typed values as radiologists write them, for stage 1 (`workers.rules_stage`).

- `shadow`: the report text with number words (NL/DE/EN, 0-99) written as digits and
  approximation and linking words ("ongeveer", "circa", "etwa", "ca.", "approximately",
  "beträgt", "liegt bei") blanked, character for character the same length, so value patterns
  run on it and their offsets stay offsets into the report text.
- `lateral_value`: a left/right pair of ordinal variables (mta_left/mta_right, and any future
  `<x>_left`/`<x>_right` pair) read in any order: side before or after the score, "L/R 2/1",
  both-sides words ("beiderzijds", "bilateraal", "beidseits", "bds.", "bilateral"), a score
  with no side (both sides), a header row naming the sides (tables), and a prior score
  ("was 2", "voorheen 1", "previously 1") skipped.
- `table_lines`: rows of a measurement table ("EF (%)  34  48" under "LV  RV", "| LVEF [%] |
  42 | 57-77 |") rewritten as plain statements ("LV-EF 34 %") for the variables' patterns.
- `negating_prefix`: "nicht-ischämische", "non-ischaemic", "niet-": the option is denied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mappings.template import Template, Variable, VariableType

_UNITS_NL = ["nul", "een", "twee", "drie", "vier", "vijf", "zes", "zeven", "acht", "negen"]
_UNITS_DE = ["null", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]
_UNITS_EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEENS = {
    "nl": ["tien", "elf", "twaalf", "dertien", "veertien", "vijftien", "zestien", "zeventien",
           "achttien", "negentien"],
    "de": ["zehn", "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn",
           "achtzehn", "neunzehn"],
    "en": ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
           "eighteen", "nineteen"],
}  # fmt: skip
_TENS = {
    "nl": ["twintig", "dertig", "veertig", "vijftig", "zestig", "zeventig", "tachtig", "negentig"],
    "de": ["zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"],
    "en": ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"],
}


def _number_words(language: str) -> dict[str, int]:
    units = {"nl": _UNITS_NL, "de": _UNITS_DE, "en": _UNITS_EN}[language]
    words: dict[str, int] = {}
    for value, word in enumerate(units):
        if value >= 2 or (language == "en" and value == 1) or value == 0:
            words[word] = value  # "een"/"ein" are also articles: only "één"/"eins" count as 1
    if language == "nl":
        words.update({"één": 1, "eén": 1})
    if language == "de":
        words.update({"eins": 1, "zwo": 2})
    for offset, word in enumerate(_TEENS[language]):
        words[word] = 10 + offset
    for index, tens in enumerate(_TENS[language]):
        value = 20 + 10 * index
        words[tens] = value
        for unit in range(1, 10):
            unit_word = units[unit]
            if language == "en":
                words[f"{tens}-{unit_word}"] = value + unit
                words[f"{tens} {unit_word}"] = value + unit
            elif language == "nl":
                joined = {1: "een", 2: "twee", 3: "drie"}.get(unit, unit_word)
                link = "ën" if joined.endswith("e") else "en"
                words[f"{joined}{link}{tens}"] = value + unit
            else:
                words[f"{'ein' if unit == 1 else unit_word}und{tens}"] = value + unit
    return words


_WORDS_BY_LANGUAGE = {language: _number_words(language) for language in ("nl", "de", "en")}
# Dutch "ten" (ten opzichte van), "elf" in an English text: the words of one language apply to
# reports of that language; an unknown language gets all of them.
_APPROX = (
    r"ongeveer|circa|ca\.|ca|approximately|approx\.|approx|about|around|etwa|ungefähr|ungefaehr|"
    r"zirka|rund|ruim|bijna|nahezu|~|±"
)
_LINK = r"beträgt|betrug|betragen|liegt bei|lag bei|bedraagt|bedroeg|van|von|bei"
_APPROX_RE = re.compile(rf"(?<!\w)(?:{_APPROX})(?!\w)\s*(?=\d)", re.IGNORECASE)
_LINK_RE = re.compile(rf"(?<!\w)(?:{_LINK})(?!\w)\s*(?=\d)", re.IGNORECASE)
# "meer dan twintig", ">5", "at least 3": a bound, not a value; its digits are hidden.
_BOUND_RE = re.compile(
    r"(?:[<>≥≤]|(?<!\w)(?:meer dan|minder dan|minstens|ten minste|more than|less than|at least|"
    r"over|mehr als|weniger als|mindestens|über|ueber)(?!\w))\s*(?P<digits>\d+)",
    re.IGNORECASE,
)
_PERCENT_RE = re.compile(r"(?<=\d)(\s*)(prozent|procent|percent|per cent)\b", re.IGNORECASE)


def _words_re(language: str | None) -> tuple[re.Pattern[str], dict[str, int]]:
    if language in _WORDS_BY_LANGUAGE:
        words = _WORDS_BY_LANGUAGE[language]
    else:
        words = {k: v for lang in ("en", "de", "nl") for k, v in _WORDS_BY_LANGUAGE[lang].items()}
        words.pop("ten", None)  # Dutch "ten opzichte van"
    alternatives = sorted(words, key=len, reverse=True)
    pattern = re.compile(
        r"(?<![\w-])(?:" + "|".join(re.escape(w) for w in alternatives) + r")(?![\w-])",
        re.IGNORECASE,
    )
    return pattern, {k.lower(): v for k, v in words.items()}


_WORDS_CACHE: dict[str | None, tuple[re.Pattern[str], dict[str, int]]] = {}


def _replace_same_length(text: str, start: int, end: int, new: str) -> str:
    width = end - start
    return text[:start] + new.ljust(width)[:width] + text[end:]


def shadow(text: str, language: str | None = None) -> str:
    """`text` with number words as digits and approximation/linking words blanked, same length
    (a number word too short for its digits stays as it is)."""
    key = (language or "").split("-")[0].lower() or None
    if key not in _WORDS_CACHE:
        _WORDS_CACHE[key] = _words_re(key)
    pattern, words = _WORDS_CACHE[key]
    out = text
    for match in pattern.finditer(text):
        digits = str(words[match.group(0).lower()])
        if len(digits) <= match.end() - match.start():
            out = _replace_same_length(out, match.start(), match.end(), digits)
    for regex in (_APPROX_RE, _LINK_RE):
        for match in list(regex.finditer(out)):
            out = _replace_same_length(out, match.start(), match.end(), "")
    for match in list(_BOUND_RE.finditer(out)):
        out = _replace_same_length(out, match.start("digits"), match.end("digits"), "#" * 9)
    for match in list(_PERCENT_RE.finditer(out)):
        out = _replace_same_length(out, match.start(2), match.end(2), "%")
    return out


def is_scale_floor(variable: Variable, value: object) -> bool:
    """True for an ordinal's lowest score ("GCA 0"): a negated statement keeps it ("geen
    globale atrofie (GCA 0)"), while "geen Fazekas 2" says nothing."""
    scale = variable.scale
    return variable.type is VariableType.ORDINAL and scale is not None and value == scale.min


# --- negated options --------------------------------------------------------------------------

_NEGATING_PREFIX = re.compile(r"(?:\bnicht|\bnon|\bniet|\bnon)[- ]?$", re.IGNORECASE)


def negating_prefix(text: str, start: int) -> bool:
    """True when the word at `start` carries a negating prefix ("nicht-ischämische")."""
    return bool(_NEGATING_PREFIX.search(text[max(0, start - 7) : start]))


# --- left/right pairs of ordinal scales ----------------------------------------------------

_B = r"(?<![A-Za-zÀ-ÿ])"
_E = r"(?![A-Za-zÀ-ÿ])"
_LEFT = rf"{_B}(?:links|linker|linkerzijde|linkerkant|left|li|lt|L|linke[nrs]?|linksseitig){_E}\.?"
_RIGHT = (
    rf"{_B}(?:rechts|rechter|rechterzijde|rechterkant|right|re|rt|R|rechte[nrs]?|rechtsseitig)"
    rf"{_E}\.?"
)
_BOTH = (
    rf"{_B}(?:beiderzijds|bilateraal|bilateral|bilaterally|beidseits|beidseitig|bds|bdsts|"
    rf"both sides|on both sides|each side|symmetrisch|symmetric|symmetrical|aan beide zijden|"
    rf"auf beiden Seiten){_E}\.?"
)
_PRIOR = (
    rf"{_B}(?:was|voorheen|previously|prior|eerder|toen|zuvor|vorher|vormals|before|destijds)"
    rf"{_E}"
)
_TOKEN = re.compile(
    rf"(?P<pair_sides>(?:{_LEFT}|{_RIGHT})\s*/\s*(?:{_LEFT}|{_RIGHT}))"
    rf"|(?P<pair_values>(?<![\d.,])\d\s*/\s*\d(?![\d.,]\d))"
    rf"|(?P<both>{_BOTH})|(?P<left>{_LEFT})|(?P<right>{_RIGHT})|(?P<prior>{_PRIOR})"
    rf"|(?P<number>(?<![\d.,/])\d(?![\d]|[.,]\d|\s*/\s*\d|\s*(?:mm|cm|jaar|jahre|years|%)))",
    re.IGNORECASE,
)
_SIDE_WORDS = {"left": ("left",), "right": ("right",), "both": ("left", "right")}


@dataclass(frozen=True)
class LateralHit:
    """A score of one side found in the text: where, and the segment it was read from."""

    value: int
    start: int
    end: int


def lateral_partner(template: Template, variable: Variable) -> tuple[Variable, Variable] | None:
    """(left, right) when `variable` is one side of an ordinal `<x>_left`/`<x>_right` pair."""
    if variable.type is not VariableType.ORDINAL:
        return None
    stem, _, side = variable.id.rpartition("_")
    if side not in ("left", "right") or not stem:
        return None
    ids = {v.id: v for v in template.variables}
    left, right = ids.get(f"{stem}_left"), ids.get(f"{stem}_right")
    if left is None or right is None or right.type is not VariableType.ORDINAL:
        return None
    return left, right


def _scale_names(left: Variable, right: Variable) -> list[str]:
    """The scale's names: the pair's synonyms without their side words ("MTA links" -> MTA)."""
    names: set[str] = set()
    for variable in (left, right):
        for words in variable.synonyms.values():
            for word in words:
                bare = re.sub(rf"(?:{_LEFT}|{_RIGHT})", "", word, flags=re.IGNORECASE).strip()
                if len(bare) >= 2:
                    names.add(bare)
    return sorted(names, key=len, reverse=True)


def _other_names(template: Template, left: Variable, right: Variable) -> re.Pattern[str] | None:
    words = {
        word
        for variable in template.variables
        if variable.type is VariableType.ORDINAL and variable.id not in (left.id, right.id)
        for ws in variable.synonyms.values()
        for word in ws
    }
    if not words:
        return None
    return re.compile(
        r"(?<!\w)(?:"
        + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        + r")(?!\w)",
        re.IGNORECASE,
    )


def _segment(text: str, start: int, end: int, stop: re.Pattern[str] | None) -> tuple[int, int]:
    """From the last clause start before the name to the sentence end after it, cut at the
    next other scale's name."""
    before = max(text.rfind(ch, 0, start) for ch in ".;\n,(")
    seg_start = before + 1 if before >= 0 else 0
    after = re.compile(r"\.(?=\s|$)|;|\n").search(text, end)
    seg_end = after.start() if after else len(text)
    if stop is not None:
        other = stop.search(text, end, seg_end)
        if other is not None:
            seg_end = other.start()
    return seg_start, seg_end


def _header_sides(text: str, line_start: int) -> list[str] | None:
    """The side order of a table header in the three lines above (e.g. "| schaal | links |
    rechts |" -> ["left", "right"])."""
    lines = text[:line_start].splitlines()[-3:]
    for line in reversed(lines):
        sides = [kind for m in _TOKEN.finditer(line) for kind in ("left", "right") if m.group(kind)]
        if len(sides) >= 2 and len(set(sides)) == 2:
            return sides
    return None


def _read_segment(
    segment: str, offset: int, scale: tuple[int, int], header: list[str] | None
) -> dict[str, LateralHit]:
    low, high = scale
    found: dict[str, LateralHit] = {}
    pending_side: tuple[str, ...] | None = None
    pending_number: tuple[int, int, int] | None = None
    pair_sides: list[str] | None = None
    skip_next = False
    loose: list[tuple[int, int, int]] = []

    def put(sides: tuple[str, ...], value: int, start: int, end: int) -> None:
        for side in sides:
            found.setdefault(side, LateralHit(value, offset + start, offset + end))

    for match in _TOKEN.finditer(segment):
        kind = match.lastgroup
        text = match.group(0)
        if kind == "prior":
            skip_next = True
            continue
        if kind == "pair_sides":
            pair_sides = [
                "left" if re.fullmatch(_LEFT, s.strip(), re.IGNORECASE) else "right"
                for s in text.split("/")
            ]
            continue
        if kind == "pair_values":
            a, b = (int(x) for x in text.split("/"))
            if skip_next:
                skip_next = False
                continue
            if low <= a <= high and low <= b <= high:
                if pair_sides and len(set(pair_sides)) == 2:
                    put((pair_sides[0],), a, match.start(), match.end())
                    put((pair_sides[1],), b, match.start(), match.end())
                elif a == b:
                    put(("left", "right"), a, match.start(), match.end())
            continue
        if kind in ("left", "right", "both"):
            sides = _SIDE_WORDS[kind or "both"]
            if pending_number is not None:
                value, start, end = pending_number
                put(sides, value, start, match.end())
                pending_number = None
            else:
                pending_side = sides
            continue
        if kind == "number":
            value = int(text)
            if skip_next:
                skip_next = False
                continue
            if not low <= value <= high:
                continue
            if pending_side is not None:
                put(pending_side, value, match.start(), match.end())
                pending_side = None
            elif pending_number is None:
                pending_number = (value, match.start(), match.end())
                loose.append(pending_number)
            else:
                loose.append((value, match.start(), match.end()))
    if not found:
        for sides, (value, start, end) in _unlabelled(header, loose):
            put(sides, value, start, end)
    return found


def _unlabelled(
    header: list[str] | None, loose: list[tuple[int, int, int]]
) -> list[tuple[tuple[str, ...], tuple[int, int, int]]]:
    """Sides for the numbers no side word claimed: a header's sides in order when there
    are two or more numbers, else the first number for both sides."""
    if header and len(loose) >= 2:
        return [((side,), number) for side, number in zip(header, loose, strict=False)]
    if loose:
        return [(("left", "right"), loose[0])]
    return []


def lateral_value(text: str, template: Template, variable: Variable) -> LateralHit | None:
    """The score of `variable` (one side of a lateral pair) read from `text` (a shadow text);
    the first statement in text order that gives this side wins."""
    pair = lateral_partner(template, variable)
    if pair is None:
        return None
    left, right = pair
    side = "left" if variable.id == left.id else "right"
    scale = variable.scale
    if scale is None:
        return None
    names = _scale_names(left, right)
    if not names:
        return None
    name_re = re.compile(
        r"(?<!\w)(?:"
        + "|".join(re.escape(n) for n in names)
        + r")(?:[- ]?(?:score|graad|grade|schaal|scale))?(?!\w)",
        re.IGNORECASE,
    )
    stop = _other_names(template, left, right)
    seen: set[tuple[int, int]] = set()
    for match in name_re.finditer(text):
        seg = _segment(text, match.start(), match.end(), stop)
        if seg in seen:
            continue
        seen.add(seg)
        line_start = text.rfind("\n", 0, match.start()) + 1
        header = _header_sides(text, line_start)
        found = _read_segment(text[seg[0] : seg[1]], seg[0], (scale.min, scale.max), header)
        if side in found:
            return found[side]
    return None


# --- measurement tables --------------------------------------------------------------------

_CELL_NUMBER = re.compile(r"(?<![\w.,/-])(\d+(?:[.,]\d+)?)(?![\w.,/-]|[.,]\d)")
_UNIT_IN_LABEL = re.compile(r"[(\[]\s*(ml/m²|ml/m2|g/m²|g/m2|ml|g|%|ms)\s*[)\]]", re.IGNORECASE)
_COLUMN = re.compile(r"(?<![A-Za-z])(LV|RV)(?![A-Za-z])")


@dataclass(frozen=True)
class TableLine:
    """A table row rewritten as a statement, and where the row is in the text."""

    statement: str
    start: int
    end: int


def table_lines(text: str) -> list[TableLine]:
    """Rows of measurement tables as statements: label + unit in the label, one or two
    numbers; a header row naming LV and RV columns gives the ventricle of each number."""
    found: list[TableLine] = []
    position = 0
    columns: list[str] = []
    for line in text.splitlines(keepends=True):
        start, position = position, position + len(line)
        body = line.strip().strip("|").strip()
        if not body:
            columns = []
            continue
        unit_match = _UNIT_IN_LABEL.search(body)
        cells = [c.strip() for c in re.split(r"\s*\|\s*|\t|\s{2,}", body) if c.strip()]
        if unit_match is None:
            named = _COLUMN.findall(body)
            if len(named) >= 2 and not _CELL_NUMBER.search(body):
                columns = named
            continue
        label = _UNIT_IN_LABEL.sub("", cells[0]).strip() if cells else ""
        numbers = [c for c in cells[1:] if _CELL_NUMBER.fullmatch(c)]
        if not label or not numbers:
            continue
        unit = unit_match.group(1)
        targets = columns if columns and not _COLUMN.search(label) else [""]
        for column, number in zip(targets, numbers, strict=False):
            prefix = f"{column}-" if column else ""
            found.append(
                TableLine(f"{prefix}{label} {number} {unit}", start, start + len(line.rstrip()))
            )
    return found
