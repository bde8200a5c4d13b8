"""Stage-1 assertion detection: ConText over one mention in its sentence.

`assess(text, start, end, language)` says whether the mention `text[start:end]` is negated,
uncertain, historical, hypothetical or about someone other than the patient.

How (ConText, Harkema et al. 2009, with NegEx's pseudo-triggers):
1. The sentence holding the mention is cut out of `text`: the unit of `mappings.units` around it
   (units end at `.`/`!`/`?` before whitespace but not after abbreviations such as "Z.n." or
   "p.o.", at `;`, and at a hard line break; a line wrapped inside a sentence continues it).
2. Triggers (`workers.context_triggers`) are found left to right, longest first at each
   position, never overlapping: a pseudo-trigger ("no change", "gram negative", "nicht nur")
   takes its words so the shorter trigger inside it never fires.
3. A FORWARD trigger covers the words after it, a BACKWARD trigger the words before it, up to
   the sentence end, a terminator of its category ("but", "maar", "aber", "which" ...), a
   trigger of a rival value on the same axis (negated/possible, historical/hypothetical: "No
   effusion, possible pneumothorax"), a heading colon (forward only), or MAX_FORWARD /
   MAX_BACKWARD words; a backward uncertainty scope also ends at a comma ("RLL nodule, 폐암
   가능성"). The mention takes every category whose scope reaches it.
4. The mention is the ConText target: a trigger overlapping it ("no focal" in "no [focal
   deficits]") does not count, and the text on each side is scanned on its own instead.
Languages: en, nl, de, ko (Korean reports mix in English, so ko adds en); None or any other tag
uses all tables, except Dutch words that are German or English words too ("noch", "nicht").
Regexes are compiled once per language (lazily); sentence boundaries and trigger scans are cached.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache

from mappings.units import unit_ends
from workers.context_triggers import (
    DE_RADBRIDGE,
    EN_MEDSPACY,
    EN_RADBRIDGE,
    KO_RADBRIDGE,
    NL_MEDSPACY,
    NL_ONLY,
    NL_RADBRIDGE,
    Rule,
)
from workers.errors import TriggerTableError, WorkerError

MAX_FORWARD = {
    "NEGATED": 10,
    "POSSIBLE": 10,
    "PROBABLE": 10,
    "HISTORICAL": 15,
    "HYPOTHETICAL": 15,
    "FAMILY": 8,
}
"""Words after a forward trigger that its scope reaches, per category."""
MAX_BACKWARD = 8
"""Words before a backward trigger that its scope reaches."""
MAX_SENTENCE = 600
"""Characters looked at on each side of the mention when finding its sentence."""

CATEGORIES = ("NEGATED", "POSSIBLE", "PROBABLE", "HISTORICAL", "HYPOTHETICAL", "FAMILY")
AXES = (
    frozenset({"NEGATED", "POSSIBLE", "PROBABLE"}),
    frozenset({"HISTORICAL", "HYPOTHETICAL"}),
    frozenset({"FAMILY"}),
)
"""Existence, temporality, experiencer: a trigger ends the scope of another value of its axis."""
_LATIN = "0-9A-Za-zÀ-ÖØ-öø-ÿĀ-ſ"
_WORD = re.compile(r"\S+")


DIRECTIONS = ("FORWARD", "BACKWARD", "BIDIRECTIONAL", "PSEUDO", "TERMINATE")


class SpanError(WorkerError, ValueError):
    """The mention span is not inside the text."""


def _rule_problem(category: str, direction: str, pattern: str) -> str | None:
    """What is wrong with one trigger rule (`workers.context_triggers`' syntax), or None."""
    if direction not in DIRECTIONS:
        return f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}"
    words = category.split()
    if category == "ALL" and direction != "TERMINATE":
        return "category ALL is for TERMINATE rules only"
    unknown = [word for word in words if word not in CATEGORIES] if category != "ALL" else []
    if not words or unknown:
        return f"category {category!r} is not ALL or among {', '.join(CATEGORIES)}"
    for part in pattern.split(" "):
        alternatives = part.removesuffix("?").split("|")
        if not part or any(not alternative for alternative in alternatives):
            return f"pattern {pattern!r} has an empty token or alternative"
        if "$" in part and part != "$":
            return f"pattern {pattern!r}: $ is a token of its own"
    return None


def check_rules(table: str, rules: tuple[Rule, ...]) -> None:
    """TriggerTableError naming the table, the rule's place and the problem, for the first
    malformed rule (a misspelt direction or category would silently make a dead rule)."""
    for index, (category, direction, pattern) in enumerate(rules):
        problem = _rule_problem(category, direction, pattern)
        if problem is not None:
            raise TriggerTableError(f"ConText table {table}, rule {index}: {problem}")


@dataclass(frozen=True)
class ContextResult:
    """The assertion of one mention."""

    negated: bool = False
    uncertain: bool = False
    """Hedged: possible or probable existence."""
    probable: bool = False
    """Hedged only with a strong hedge ("probable", "likely", "consistent with"): pyConText's
    probable existence. Whether that counts as present is the template's convention."""
    historical: bool = False
    hypothetical: bool = False
    other_experiencer: bool = False


@dataclass(frozen=True)
class _Trigger:
    categories: frozenset[str]
    direction: str
    start: int
    end: int


@dataclass(frozen=True)
class _Compiled:
    """Per first character, the rules twice: shortest-match-first and longest-match-first."""

    starts: re.Pattern[str]
    buckets: dict[str, tuple[re.Pattern[str], re.Pattern[str]]]
    rules: tuple[tuple[frozenset[str], str], ...]


def _alternation(entries: list[tuple[int, int, int, str]], by_longest: bool) -> re.Pattern[str]:
    """One regex trying the rules shortest-match-first (or longest-match-first)."""

    def order(entry: tuple[int, int, int, str]) -> tuple[int, int, int]:
        shortest, longest, index, _ = entry
        return (-longest, -shortest, index) if by_longest else (-shortest, -longest, index)

    return re.compile("|".join(e[3] for e in sorted(entries, key=order)), re.IGNORECASE)


def _alternatives(token: str) -> tuple[list[str], bool]:
    """The alternatives of one pattern token, longest first, and whether it is optional."""
    optional = token.endswith("?") and len(token) > 1
    body = token[:-1] if optional else token
    alternatives = [a.replace("_", " ") for a in body.split("|") if a]
    return sorted(alternatives, key=len, reverse=True), optional


def _alt_regex(alternative: str) -> str:
    if alternative == "#":
        return r"\d+"
    if alternative == "$":
        return r"(?=\s*(?:[.,;:](?!\d)|$))"  # "0." ends a statement, "0.9" is a number
    return r"[\s\-]+".join(re.escape(part) for part in alternative.split(" "))


def _separator(alternative: str, tight: bool) -> str:
    if alternative == "$":
        return ""
    if tight or alternative.startswith(("'", "n't")) or not alternative[0].isalnum():
        return r"\s*"
    return r"[\s\-]+"


def _rule_regex(pattern: str, tight: bool) -> tuple[str, set[str], int, int]:
    """(regex, possible first characters, shortest and longest match length) of one rule.

    Leading optional tokens carry the separator after them, every later token the one before
    it, so "is|are? absent" matches both "absent" and "is absent".
    """
    parts: list[str] = []
    first: set[str] = set()
    leading = True
    min_len = max_len = 0
    for token in pattern.split(" "):
        alternatives, optional = _alternatives(token)
        if alternatives == ["$"]:
            parts.append(_alt_regex("$"))
            min_len += 1  # "likely $" is tried before the bare "likely" at the same place
            max_len += 1
            continue
        if leading:
            for alternative in alternatives:
                first.update("0123456789" if alternative == "#" else alternative[0].lower())
        if leading and optional:
            tail = r"[\s\-]*" if tight else r"[\s\-]+"
            pieces = [_alt_regex(a) + tail for a in alternatives]
        elif leading:
            pieces = [_alt_regex(a) for a in alternatives]
        else:
            pieces = [_separator(a, tight) + _alt_regex(a) for a in alternatives]
        parts.append("(?:" + "|".join(pieces) + ")" + ("?" if optional else ""))
        if not optional:
            min_len += len(alternatives[-1]) + (0 if leading else 1)
        max_len += len(alternatives[0]) + (0 if leading else 1)
        leading = leading and optional
    return "".join(parts) + f"(?![{_LATIN}])", first, min_len, max_len


def _compile(rule_sets: tuple[tuple[tuple[Rule, ...], bool], ...]) -> _Compiled:
    rules: list[tuple[frozenset[str], str]] = []
    by_char: dict[str, list[tuple[int, int, int, str]]] = {}
    for rule_set, tight in rule_sets:
        for category, direction, pattern in rule_set:
            regex, first, min_len, max_len = _rule_regex(pattern, tight)
            index = len(rules)
            categories = frozenset(CATEGORIES if category == "ALL" else category.split())
            rules.append((categories, direction))
            for char in first:
                by_char.setdefault(char, []).append(
                    (min_len, max_len, index, f"(?P<r{index}>{regex})")
                )
    buckets = {
        char: (_alternation(entries, by_longest=False), _alternation(entries, by_longest=True))
        for char, entries in by_char.items()
    }
    latin = "".join(re.escape(c) for c in sorted(by_char) if re.match(f"[{_LATIN}]", c))
    other = "".join(re.escape(c) for c in sorted(by_char) if not re.match(f"[{_LATIN}]", c))
    alternatives = [f"(?<![{_LATIN}])[{latin}]"] if latin else []
    if other:
        alternatives.append(f"[{other}]")
    starts = re.compile("|".join(alternatives), re.IGNORECASE)
    return _Compiled(starts=starts, buckets=buckets, rules=tuple(rules))


_EN = ((EN_MEDSPACY, False), (EN_RADBRIDGE, False))
_NL = ((NL_MEDSPACY, False), (NL_RADBRIDGE, False))
_DE = ((DE_RADBRIDGE, False),)
_KO = ((KO_RADBRIDGE, True),)
_LANGUAGE_RULES = {
    "en": _EN,
    "nl": (*_NL, (NL_ONLY, False)),
    "de": _DE,
    "ko": (*_KO, *_EN),
    "*": (*_EN, *_NL, *_DE, *_KO),
}
_COMPILED: dict[str, _Compiled] = {}
for _table, _rules in {
    "EN_MEDSPACY": EN_MEDSPACY,
    "EN_RADBRIDGE": EN_RADBRIDGE,
    "NL_MEDSPACY": NL_MEDSPACY,
    "NL_RADBRIDGE": NL_RADBRIDGE,
    "NL_ONLY": NL_ONLY,
    "DE_RADBRIDGE": DE_RADBRIDGE,
    "KO_RADBRIDGE": KO_RADBRIDGE,
}.items():
    check_rules(_table, _rules)  # on load: a malformed table stops the import


def _compiled(language: str | None) -> _Compiled:
    key = (language or "*").split("-")[0].lower()
    key = key if key in _LANGUAGE_RULES else "*"
    if key not in _COMPILED:
        _COMPILED[key] = _compile(_LANGUAGE_RULES[key])
    return _COMPILED[key]


def compile_all() -> None:
    """Compile every language's rules now (the worker's warm-up, before its pool forks: each
    pool process would otherwise compile the language of its first report itself)."""
    for key in _LANGUAGE_RULES:
        _compiled(key)


@lru_cache(maxsize=8192)
def _scan(sentence: str, language: str | None) -> tuple[_Trigger, ...]:
    compiled = _compiled(language)
    found: list[_Trigger] = []
    position = 0
    while True:
        start = compiled.starts.search(sentence, position)
        if start is None:
            break
        # The longer match of two orders: a rule with long optional words loses to a shorter
        # rule in the first, a rule with a long fixed part to one with optional words in the second.
        by_min, by_max = compiled.buckets[sentence[start.start()].lower()]
        match = by_min.match(sentence, start.start())
        longest = by_max.match(sentence, start.start())
        if longest is not None and (match is None or longest.end() > match.end()):
            match = longest
        if match is None or match.end() == match.start() or match.lastgroup is None:
            position = start.start() + 1
            continue
        categories, direction = compiled.rules[int(match.lastgroup[1:])]
        found.append(_Trigger(categories, direction, match.start(), match.end()))
        position = match.end()
    return tuple(found)


@lru_cache(maxsize=256)
def _boundaries(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(starts, ends) of the marks that end the units of `text` (`mappings.units`), in order."""
    marks = unit_ends(text)
    return tuple(start for start, _ in marks), tuple(end for _, end in marks)


def sentence_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """(start, end) of the sentence around [start, end), at most MAX_SENTENCE characters each way."""
    starts, ends = _boundaries(text)
    before = bisect_right(ends, start) - 1
    sentence_start = ends[before] if before >= 0 else 0
    after = bisect_left(starts, end)
    sentence_end = starts[after] if after < len(starts) else len(text)
    return max(sentence_start, start - MAX_SENTENCE), min(sentence_end, end + MAX_SENTENCE)


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def _triggers(sentence: str, start: int, end: int, language: str | None) -> tuple[_Trigger, ...]:
    """The triggers of the sentence outside the mention (the mention is the ConText target)."""
    triggers = _scan(sentence, language)
    if all(t.end <= start or t.start >= end for t in triggers):
        return triggers
    # The NUL characters stand for the mention: no trigger can match them or see past them.
    after = tuple(
        _Trigger(t.categories, t.direction, t.start + end - 1, t.end + end - 1)
        for t in _scan("\0" + sentence[end:], language)
    )
    return _scan(sentence[:start] + "\0", language) + after


def _ends_scope(trigger: _Trigger, category: str, low: int, high: int) -> bool:
    """Whether `trigger`, inside [low, high), ends a scope of `category`: a terminator of it,
    or a trigger of another value on the same axis ("No effusion, possible pneumothorax")."""
    if not (low <= trigger.start and trigger.end <= high) or trigger.direction == "PSEUDO":
        return False
    if trigger.direction == "TERMINATE":
        # a terminator of possible existence ends probable existence too
        return category in trigger.categories or (
            category == "PROBABLE" and "POSSIBLE" in trigger.categories
        )
    rivals = next(axis for axis in AXES if category in axis) - {category}
    return bool(trigger.categories & rivals)


def _categories(sentence: str, start: int, end: int, language: str | None) -> set[str]:
    triggers = _triggers(sentence, start, end, language)
    found: set[str] = set()
    for trigger in triggers:
        if trigger.direction in ("TERMINATE", "PSEUDO"):
            continue
        forward = trigger.direction in ("FORWARD", "BIDIRECTIONAL") and trigger.end <= start
        backward = trigger.direction in ("BACKWARD", "BIDIRECTIONAL") and trigger.start >= end
        for category in trigger.categories - found:
            if forward:
                low, high, limit = trigger.end, start, MAX_FORWARD[category]
                if ":" in sentence[low:high].lstrip().removeprefix(":"):
                    continue  # a heading ("REFERRING DIAGNOSIS:") starts a new phrase
            elif backward:
                low, high, limit = end, trigger.start, MAX_BACKWARD
                hedge = category in ("POSSIBLE", "PROBABLE")
                if hedge and "," in sentence[low:high].rstrip().rstrip(","):
                    continue  # "RLL nodule, 폐암 가능성": the possible thing follows the comma
            else:
                continue
            if _words(sentence[low:high]) > limit:
                continue
            if any(_ends_scope(other, category, low, high) for other in triggers):
                continue
            found.add(category)
    return found


def assess(text: str, start: int, end: int, language: str | None = None) -> ContextResult:
    """The ConText assertion of the mention `text[start:end]`.

    `text` may be a clause, a sentence or a whole report; `language` (en, nl, de, ko, or None
    for all of them) picks the trigger tables.
    """
    if not 0 <= start <= end <= len(text):
        raise SpanError(f"mention span [{start}, {end}) is outside a text of {len(text)} chars")
    sentence_start, sentence_end = sentence_bounds(text, start, end)
    sentence = text[sentence_start:sentence_end]
    found = _categories(sentence, start - sentence_start, end - sentence_start, language)
    return ContextResult(
        negated="NEGATED" in found,
        uncertain="POSSIBLE" in found or "PROBABLE" in found,
        probable="PROBABLE" in found and "POSSIBLE" not in found,
        historical="HISTORICAL" in found,
        hypothetical="HYPOTHETICAL" in found,
        other_experiencer="FAMILY" in found,
    )
