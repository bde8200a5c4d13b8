"""Where a unit of report text ends: sentences and statements, not display lines.

`Report.text` keeps the line breaks the sender wrote. Many RIS send a report as one OBX segment
per display line and many exports are hard-wrapped, at 60-80 characters in the middle of
sentences ("There is no pericardial⏎effusion."). So a line break is either *soft* (inside a
sentence or a wrapped line: it reads as a space) or *hard* (the author's own line break). This
module makes that decision, once, for every reader of report text: section detection
(`mappings.sections`), the rules stage (`workers.lexicon_text.clauses`, `workers.rules_stage`),
ConText scope (`workers.context`), the LLM prompt (`workers.prompt`) and the insights step.
Pure functions, cached per text.

API (offsets are code-point offsets into `text`, as everywhere in radbridge):
- `flowed(text)`: `text` with each soft line break replaced by a space. Same length, so an offset
  into it is an offset into `text`: read from `flowed(text)`, quote from `text` (the quote is
  what the report says, line break included). Its lines are the author's lines.
- `unit_spans(text)`: `(start, end)` of each unit in text order, without the surrounding
  whitespace and without the mark that ends it ("No effusion" of "No effusion.").
- `unit_ends(text)`: `(start, end)` of each mark that ends a unit: a sentence mark, `;`, or a
  hard line break (a run of blank lines is one mark).
- `soft_breaks(text)`: the offsets of the soft line breaks.
- `is_sentence_end(text, position)`: whether the `.`, `!` or `?` there ends a sentence.
Pass the text as received, never a `flowed` one: the decision reads the physical lines.

A unit ends at a sentence mark (`.`, `!`, `?` before whitespace or the end; not a `.` after an
abbreviation, "ca.", "z.B.", "i.v.m.", "Dr.", "max." or a single letter, unless it is a unit
after a number, "142 g.", "56 ms."; not the `.` of a list number, "1. No effusion"), at `;`,
and at a hard line break. The line break between line P and the next line N is decided by the
first rule that applies (word lists for English, Dutch and German). P is *full* when the first
word of N would not have fitted on it: len(P) + 1 + len(word) > the widest line of its block
(a run of non-blank lines), that width 30-132 characters; a block is *wrapped* prose when at
least two of its lines, and a third of its lines of 30 characters or more, are full and it holds
a sentence mark (a list of statements has full lines only by chance).
1. hard: a blank line; P or N is a table row (a `|`, a tab, or a gap of 3+ spaces between words);
2. hard: N starts a list item ("- ", "• ", "1.", "2)", "a)") or a "key: value" line ("LUNGS:",
   "Effusion: none"), unless P is full, unfinished and no item or heading itself, and N's marker
   or lower-case label is a wrap ("... Koedam-score⏎3. Hippocampi", "... Mediotemporale⏎atrofie
   links meer dan rechts: MTA 3"); a capitalised "Key:" always starts a line;
3. soft: P ends with a word that cannot end a statement, an article, preposition, conjunction,
   negation or auxiliary ("the", "no", "of", "and", "geen", "van", "kein", "eines", "mit"),
   unless it is the one-word value of a "key: value" line ("Pneumothorax: no");
4. hard: N is a heading alone on its line (`mappings.headings`, capitalised) or an all-capitals
   label ("CHEST PA AND LATERAL") in a text that has lower-case letters;
5. soft: P ends with a comma, hyphen, slash, `&`, `+`, an opening bracket or an abbreviation that
   needs its object ("V.a.", "Z.n.", "ca.", "e.g.", "DD"), or leaves a bracket open;
6. hard: P is a heading alone or an all-capitals label;
7. P ends with `:`: soft when N starts in lower case or with a digit (the label's value,
   "Perikarderguss:⏎keiner", "Lacunes:⏎0") or P is full in a wrapped block, else hard;
8. P ends a sentence (`.` `!` `?` `;`): soft only when P is full in a wrapped block (the mark
   still ends the unit), else hard;
9. soft: N starts with a lower-case letter or an opening bracket;
10. hard: N starts with a capitalised function word ("No", "The", "Kein", "Geen"): within a
   sentence these are lower case in all three languages;
11. soft: P ends inside a German noun phrase, a determiner or preposition followed by inflected
   lower-case words only ("kein pathologischer", "im rechten"): its capitalised noun is on N;
12. soft: P is full in a wrapped block (all-capitals text, German nouns, numbers and acronyms
   continue a wrapped line this way), or P is full and N starts with a measurement ("LVEDV⏎
   265 ml");
13. hard otherwise: one statement per line ("Herz normal groß⏎Lunge frei").
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache

from mappings.headings import HEADING_ALONE

MIN_WRAP_WIDTH = 30
"""The narrowest block width read as a hard wrap (a full line, rules 2, 7, 8 and 12)."""
MAX_WRAP_WIDTH = 132
"""The widest block width read as a hard wrap."""

FUNCTION_WORDS = frozenset(
    " ".join(
        (
            "a an the no not nor without with within of in on at to from for by into onto via",
            "per and or but as than is are was were be been being has have had there which that",
            "whose who may might could can cannot should would will both either neither any",
            "some its their this these those",
            "de het een geen niet zonder met van op aan bij naar voor door en maar als dan zijn",
            "waren wordt worden er die dat om tot uit over onder boven tussen naast na sinds",
            "ter ten beide",
            "der das den dem des ein eine einen einem einer eines kein keine keinen keinem",
            "keiner keines nicht ohne mit vom im am auf beim zum zur zu nach aus für durch gegen",
            "um unter über zwischen neben hinter vor seit bis und oder sowie aber wie ist sind",
            "war wird werden sich es",
        )
    ).split()
)
"""Words that cannot end a statement (rules 3 and 10): articles, prepositions, conjunctions,
negations and auxiliaries of English, Dutch and German."""

CONTINUED_ABBREVIATIONS = frozenset(
    (
        "v.a.", "z.n.", "ca.", "e.g.", "i.e.", "z.b.", "bzw.", "vs.", "vs", "incl.", "approx.",
        "sog.", "evtl.", "ggf.", "dd", "d.d.", "s/p", "r/o", "st.p.", "b.v.", "o.a.", "m.n.",
    )
)  # fmt: skip
"""Abbreviations whose object follows them (rule 5): "V.a.⏎Pneumonie", "DD⏎Atelektase"."""

_ABBREVIATION = re.compile(
    r"(?:^|[\s(])(?:[^\W\d_]|(?:[^\W\d_]{1,2}\.){1,3}[^\W\d_]{1,2}|dr|mr|mrs|ms|ca|vs|"
    r"bzw|evtl|ggf|st|nr|approx|max|min|ant|post|inf|sup|med|lat|fig|resp|zust|zn|rt|lt|"
    r"pt|hx|sog|incl|excl|etc|i\.v|i\.e|e\.g)$",
    re.IGNORECASE,
)
"""The word before a `.` that makes it an abbreviation, not a sentence end."""
_UNIT_AFTER_NUMBER = re.compile(r"\d\s?[^\W\d_]{1,3}$")
"""A unit after a number ("LV mass 142 g.", "T2 56 ms."): the end of a sentence, no abbreviation."""
_ITEM_NUMBER = re.compile(r"\(?\d{1,2}$")
_MARK = re.compile(r"[.!?](?=\s|$)|;|\n(?:[ \t]*\n)*")
_LIST_ITEM = re.compile(
    r"[ \t]*(?:[-*•·–—▪■►➢](?=[ \t])|\(?\d{1,2}[.)](?=[ \t])|\(?[A-Za-z]\)(?=[ \t]))"
)
_MEASUREMENT = re.compile(
    r"[ \t]*\d+(?:[.,]\d+)?[ \t]?(?:%|[^\W\d_]{1,3}(?:/[^\W\d_]{1,3}²?)?)(?!\w)"
)
"""A line that starts with a measurement ("180 g", "990 ms", "55 %"): the value of the label the
full line before it ends with (rule 12)."""
_TABLE_ROW = re.compile(r"\||\t|\S[ ]{3,}\S")
_KEY_VALUE = re.compile(r"[ \t#*]*[^\W_][^:\n]{0,40}?:(?=[ \t]|$)")
_KEY_WORDS = 6
_SENTENCE_MARK = re.compile(r"[\w%)][.!?;](?=\s|$)")
_LAST_SENTENCE = re.compile(r"[.!?;]\s")
_SENTENCE_INSIDE = re.compile(r"[.;!?](?=\s)|,")
_GERMAN_OPEN_PHRASE = re.compile(
    r"(?:^|\s)(?i:kein|keine|keinen|keinem|keiner|keines|ein|eine|einen|einem|einer|eines|der|"
    r"die|das|den|dem|des|im|vom|zum|zur|beim|ins|mit|von|bei|auf|ohne|unter|über|nach|aus|zu|"
    r"für|durch|gegen|zwischen|neben|seit|hinter|in|an|am|um)"
    r"(?:\s+[\da-zäöüß][\w\-.,]*){0,3}\s+[a-zäöüß][\w\-]*(?:e|en|em|er|es)$"
)
"""A German noun phrase still open at the end of a line: a determiner or preposition, then only
lower-case words, the last one inflected (rule 11)."""


def is_sentence_end(text: str, position: int) -> bool:
    """Whether the `.`, `!` or `?` at `position` ends a sentence: it is followed by whitespace or
    the end, and a `.` follows neither an abbreviation ("ca.", "z.B.") nor the number of a list
    item ("1. No effusion", "... hernia. 2. Atelectasis")."""
    mark = text[position]
    if mark not in ".!?" or (position + 1 < len(text) and not text[position + 1].isspace()):
        return False
    if mark != ".":
        return True
    head = text[max(0, position - 12) : position]
    if _ABBREVIATION.search(head) and not _UNIT_AFTER_NUMBER.search(head):
        return False
    number = _ITEM_NUMBER.search(text, max(0, position - 4), position)
    if number is None:
        return True
    # a list number opens a line or follows a sentence; "Lacunes: 0." is a value
    before = text[max(0, number.start() - 20) : number.start()].rstrip(" \t")
    return bool(before) and before[-1] not in ".!?\n"


def _last_word(line: str) -> str:
    words = line.split()
    return words[-1].lower() if words else ""


def _first_word(line: str) -> str:
    words = line.split()
    return words[0] if words else ""


def _is_label(line: str) -> bool:
    """An all-capitals label line ("CHEST PA AND LATERAL", "LUNGS:"), not a shouted sentence."""
    stripped = line.strip().rstrip(":").strip()
    letters = [c for c in stripped if c.isalpha()]
    words = stripped.split()
    return (
        bool(letters)
        and not any(c.islower() for c in letters)
        and any(c.isupper() for c in letters)
        and 1 <= len(words) <= 6
        and (len(words) >= 2 or len(letters) >= 4)
        and not stripped.endswith((".", ",", ";"))
    )


def _is_heading(line: str) -> bool:
    stripped = line.strip().lstrip("#*- \t")
    return bool(stripped) and stripped[0].isupper() and bool(HEADING_ALONE.fullmatch(line))


def _is_key_value(line: str) -> bool:
    """A "key: value" line: a short label ("Effusion", "LV-EF (%)") then a colon; a label with a
    sentence mark or comma in it is a sentence that happens to hold a colon."""
    match = _KEY_VALUE.match(line)
    return (
        match is not None
        and len(match.group().split()) <= _KEY_WORDS
        and not _SENTENCE_INSIDE.search(match.group())
    )


def _is_answer(line: str) -> bool:
    """A "key: value" line whose value is one word ("Pneumothorax: no"): that word is the value,
    not the start of a phrase."""
    match = _KEY_VALUE.match(line)
    return match is not None and len(line[match.end() :].split()) == 1


def _ends_sentence(line: str) -> bool:
    stripped = line.rstrip()
    if not stripped:
        return False
    if stripped[-1] in ";:":
        return True
    return stripped[-1] in ".!?" and is_sentence_end(stripped, len(stripped) - 1)


def _continues(line: str) -> bool:
    """Rule 5: P ends with a character or abbreviation that needs what follows, or its sentence
    so far (`line`: the unit up to here) leaves a bracket open."""
    stripped = line.rstrip()
    sentence = _LAST_SENTENCE.split(stripped)[-1]
    return (
        stripped.endswith((",", "-", "–", "/", "&", "+", "(", "["))
        or _last_word(stripped) in CONTINUED_ABBREVIATIONS
        or sentence.count("(") > sentence.count(")")
    )


def _capitalised_function_word(line: str) -> bool:
    word = _first_word(line).rstrip(",.:;")
    return (
        len(word) > 0
        and word[0].isupper()
        and (len(word) == 1 or word[1:].islower())
        and word.lower() in FUNCTION_WORDS
    )


@dataclass(frozen=True)
class _Block:
    """A run of non-blank lines: is it hard-wrapped, and at which width."""

    wrapped: bool
    width: int


def _full(line: str, following: str, width: int) -> bool:
    return len(line.rstrip()) + 1 + len(_first_word(following)) > width


def _block(lines: list[str]) -> _Block:
    """Whether a block is hard-wrapped prose: its widest line is 30-132 characters, at least two
    lines are full, and they are at least a third of its lines that are 30 characters or longer;
    and it is prose, with a sentence mark somewhere (a list of statements without one, one per
    line, has full lines only by chance)."""
    width = max(len(line.rstrip()) for line in lines)
    if not MIN_WRAP_WIDTH <= width <= MAX_WRAP_WIDTH or len(lines) < 3:
        return _Block(False, width)
    full = sum(_full(a, b, width) for a, b in itertools.pairwise(lines))
    long = sum(len(line.rstrip()) >= MIN_WRAP_WIDTH for line in lines[:-1])
    prose = any(_SENTENCE_MARK.search(line) for line in lines)
    return _Block(full >= 2 and 3 * full >= long and prose, width)


def _starts_item(previous: str, line: str, full: bool) -> bool:
    """Rule 2: `line` starts a list item or a "key: value" line (not a wrap after a full line)."""
    if _is_key_value(line) and not line.lstrip()[:1].islower():
        return True  # "Klinische gegevens: ..." starts a line even after a full one
    if not (_LIST_ITEM.match(line) or _is_key_value(line)):
        return False
    return (
        not full
        or _ends_sentence(previous)
        or bool(_LIST_ITEM.match(previous))
        or (_is_heading(previous))
    )


def _soft(previous: str, logical: str, line: str, block: _Block, mixed_case: bool) -> bool:
    """Whether the line break between `previous` (its unit so far: `logical`) and `line` is soft:
    the rules of the module docstring, in order."""
    full = MIN_WRAP_WIDTH <= block.width <= MAX_WRAP_WIDTH and _full(previous, line, block.width)
    wrap = block.wrapped and full
    if _TABLE_ROW.search(previous) or _TABLE_ROW.search(line):
        return False
    if _starts_item(previous, line, full):
        return False
    stripped = previous.rstrip()
    if (
        stripped
        and stripped[-1].isalpha()
        and _last_word(stripped) in FUNCTION_WORDS
        and not _is_answer(stripped)
    ):
        return True
    if _is_heading(line) or (mixed_case and _is_label(line)):
        return False
    if _continues(logical):
        return True
    if _is_heading(previous) or (mixed_case and _is_label(previous)):
        return False
    first = line.lstrip()[:1]
    if stripped.endswith(":"):
        return wrap or first.islower() or first.isdigit()
    if _ends_sentence(previous):
        return wrap
    if first.islower() or first in "([":
        return True
    if _capitalised_function_word(line):
        return False
    if _GERMAN_OPEN_PHRASE.search(logical.rstrip()):
        return True
    return wrap or (full and bool(_MEASUREMENT.match(line)))


@dataclass(frozen=True)
class _Units:
    flowed: str
    soft: tuple[int, ...]
    ends: tuple[tuple[int, int], ...]
    spans: tuple[tuple[int, int], ...]


def _soft_breaks(text: str) -> tuple[int, ...]:
    """The offsets of the soft line breaks, block by block, line by line."""
    lines = text.split("\n")
    starts: list[int] = []
    position = 0
    for line in lines:
        starts.append(position)
        position += len(line) + 1
    mixed_case = any(c.islower() for c in text)
    soft: list[int] = []
    index = 0
    while index < len(lines):
        if not lines[index].strip():
            index += 1
            continue
        end = index
        while end + 1 < len(lines) and lines[end + 1].strip():
            end += 1
        block_lines = lines[index : end + 1]
        block = _block(block_lines)
        logical = block_lines[0]
        for offset in range(len(block_lines) - 1):
            previous, line = block_lines[offset], block_lines[offset + 1]
            if _soft(previous, logical, line, block, mixed_case):
                soft.append(starts[index + offset + 1] - 1)
                logical = f"{logical.rstrip()} {line.strip()}"
            else:
                logical = line
        index = end + 1
    return tuple(soft)


@lru_cache(maxsize=512)
def _units(text: str) -> _Units:
    soft = _soft_breaks(text) if "\n" in text else ()
    flow = text
    if soft:
        chars = list(text)
        for position in soft:
            chars[position] = " "
        flow = "".join(chars)
    ends: list[tuple[int, int]] = []
    for match in _MARK.finditer(flow):
        if match.group() in ".!?" and not is_sentence_end(flow, match.start()):
            continue
        ends.append(match.span())
    spans: list[tuple[int, int]] = []
    position = 0
    for mark_start, mark_end in [*ends, (len(flow), len(flow))]:
        segment = flow[position:mark_start]
        stripped = segment.strip()
        if stripped:
            start = position + len(segment) - len(segment.lstrip())
            spans.append((start, start + len(stripped)))
        position = mark_end
    return _Units(flow, soft, tuple(ends), tuple(spans))


def flowed(text: str) -> str:
    """`text` with each soft line break as a space: the same length and offsets."""
    return _units(text).flowed


def unit_spans(text: str) -> tuple[tuple[int, int], ...]:
    """(start, end) of each unit of `text`, whitespace and the ending mark excluded."""
    return _units(text).spans


def unit_ends(text: str) -> tuple[tuple[int, int], ...]:
    """(start, end) of each mark that ends a unit: `.` `!` `?` `;` or a hard line break."""
    return _units(text).ends


def soft_breaks(text: str) -> tuple[int, ...]:
    """Offsets of the line breaks of `text` that sit inside a unit (read as spaces)."""
    return _units(text).soft
