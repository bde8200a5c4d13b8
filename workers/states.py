"""Stage 1 helpers for findings stated as a subject and its state, and for excluded phrases.

A **state statement** names a subject and what it is like: "heart size is mildly enlarged",
"borderline cardiac silhouette", "the mediastinum is within normal limits". A template variable
declares `states` (subjects, abnormal words, normal words, per language); a subject and the
state word nearest to it (in the same clause, at most `STATE_GAP` characters apart, on either
side) form one statement: an abnormal word gives a mention asserted by ConText on that word
("heart is not enlarged" -> absent, "possibly enlarged" -> uncertain), a normal word an absent
mention ("heart size normal"; "not normal" -> present). This ports the CheXpert labeler's
negation patterns for normal-size statements to surface rules (no dependency parser here).

**Excluded phrases** are CheXpert's "unmention" lists: a synonym inside a longer phrase that
names something else ("effusion" in "pericardial effusion") is not a mention of the variable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mappings.report import FindingStatus
from mappings.template import StatePhrases, Variable
from workers.lexicon_text import mention_status, terms_pattern

STATE_GAP = 40
"""Most characters between a subject and its state word."""
_NOT_BEFORE = re.compile(r"\b(?:not|n't|never)\s+(?:be\s+)?$", re.IGNORECASE)


@dataclass(frozen=True)
class StateHit:
    """One state statement: where its subject and state word lie, and its assertion."""

    status: FindingStatus
    start: int
    end: int
    clause_start: int
    clause_end: int


def _words(phrases: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(word for words in phrases.values() for word in words)


def excluded_spans(text: str, variable: Variable) -> list[tuple[int, int]]:
    """The spans of the variable's excluded phrases in `text`."""
    if not variable.excludes:
        return []
    return [m.span() for m in terms_pattern(_words(variable.excludes)).finditer(text)]


def inside(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """True when [start, end) lies within one of `spans`."""
    return any(a <= start and end <= b for a, b in spans)


def _nearest_state(
    clause: str, subject: tuple[int, int], states: list[tuple[int, int, bool]]
) -> tuple[int, int, bool] | None:
    best: tuple[int, tuple[int, int, bool]] | None = None
    for state in states:
        start, end, _ = state
        if start < subject[1] and end > subject[0]:
            continue  # the state word overlaps the subject ("enlarged heart" is a synonym)
        gap = start - subject[1] if start >= subject[1] else subject[0] - end
        if gap <= STATE_GAP and (best is None or gap < best[0]):
            best = (gap, state)
    return None if best is None else best[1]


def _state_words(clause: str, phrases: StatePhrases) -> list[tuple[int, int, bool]]:
    found = [
        (m.start(), m.end(), False)
        for m in terms_pattern(_words(phrases.abnormal)).finditer(clause)
    ]
    normal = [
        (m.start(), m.end(), True) for m in terms_pattern(_words(phrases.normal)).finditer(clause)
    ]
    # a normal phrase that contains an abnormal word ("upper limits of normal" vs "large") wins
    found = [s for s in found if not any(a <= s[0] and s[1] <= b for a, b, _ in normal)]
    return sorted(found + normal)


def state_hits(
    text: str, clause_spans: list[tuple[int, int]], variable: Variable
) -> list[StateHit]:
    """Every state statement of the variable, one per subject mention that has a state word."""
    phrases = variable.states
    if phrases is None:
        return []
    subjects = terms_pattern(_words(phrases.subjects))
    hits: list[StateHit] = []
    for clause_start, clause_end in clause_spans:
        clause = text[clause_start:clause_end]
        states = _state_words(clause, phrases)
        if not states:
            continue
        for subject in subjects.finditer(clause):
            state = _nearest_state(clause, subject.span(), states)
            if state is None:
                continue
            start, end, normal = state
            if normal:
                # "heart size normal" is absent; only "not normal" reverses it (a negation
                # further away, "no effusion or the heart is normal", is about something else)
                negated = _NOT_BEFORE.search(clause, 0, start) is not None
                status = FindingStatus.PRESENT if negated else FindingStatus.ABSENT
            else:
                found = mention_status(clause, start, end)
                if found is None:
                    continue
                status = found
            hits.append(
                StateHit(
                    status,
                    clause_start + min(start, subject.start()),
                    clause_start + max(end, subject.end()),
                    clause_start,
                    clause_end,
                )
            )
    return hits
