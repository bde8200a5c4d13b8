"""Stage 1: normal statements ("No acute intracranial abnormality", "Geen afwijkingen",
"Unauffälliger Befund") make the findings they cover absent, with the statement as evidence.

A template lists its statements (`normal_statements`: whole phrases, negation included, and the
presence variables each covers). A phrase found in a clause gives one `absent` mention per
covered variable; a finding stated present or uncertain elsewhere wins as always ("Otherwise
normal" after a stated finding), and a phrase in the history section never counts
(`workers.rules_stage` filters both). A statement opens its sentence, after a heading ("Conclusie:")
"otherwise" and an article at most: "Patellofemoraal geen afwijkingen" and "Links geen afwijkingen" are
limited to a region or side and make nothing absent at report level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mappings.template import Template
from workers.lexicon_text import terms_pattern

# What may stand before a statement in its clause: list marks, a heading ("Beurteilung:",
# "Echo bovenbuik:", "Right ankle, 3 views:"), "otherwise" / "verder" / "ansonsten" and an article ("The calvarium is
# intact").
_OPENING = re.compile(
    r"^[\W\d_]*(?:[^\W\d_][\w /.,-]{0,40}:)?[\W\d_]*"
    r"(?:(?:otherwise|verder|overigens|ansonsten|sonst|im übrigen)[\W_]+)?"
    r"(?:(?:the|de|het|die|der|das)\s+)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class NormalHit:
    """One normal statement found: the variables it makes absent and where it lies."""

    variables: tuple[str, ...]
    start: int
    end: int
    clause_start: int
    clause_end: int


def normal_hits(
    text: str, clause_spans: list[tuple[int, int]], template: Template
) -> list[NormalHit]:
    """Every normal statement of the template in `text` (read as `mappings.units.flowed`)."""
    hits: list[NormalHit] = []
    for statement in template.normal_statements:
        words = tuple(word for phrases in statement.phrases.values() for word in phrases)
        pattern = terms_pattern(words)
        covered = template.covered(statement)
        for clause_start, clause_end in clause_spans:
            clause = text[clause_start:clause_end]
            for match in pattern.finditer(clause):
                if not _OPENING.match(clause[: match.start()]):
                    continue
                hits.append(
                    NormalHit(
                        covered,
                        clause_start + match.start(),
                        clause_start + match.end(),
                        clause_start,
                        clause_end,
                    )
                )
    return hits
