"""The NegEx / ConText annotation sets: read them and score `workers.context.assess` on them.

Files (chapmanbe/negex, copied to `../shared/data/negex/`, see its README.txt):
- `Annotations-1-120.txt`: TSV with a header `Report No.  Concept  Sentence  Negation`;
  Negation is Affirmed or Negated. 2,376 sentence-concept pairs from 120 clinical reports.
- `rsAnnotations-1-120-random.txt`: the same pairs with ConText labels, header
  `line number  Condition  sentence  negation_status  temporality  experiencer`; temporality
  Recent / Historical / Not particular (read as hypothetical), experiencer Patient / Other /
  Family member.
A sentence that holds a tab or quote is wrapped in double quotes (read as CSV, tab-delimited).

Locating the concept in its sentence (`NegexItem.located` says which step found it): the
annotators wrote the concept in UPPER CASE inside the sentence, so (1) the first case-sensitive
occurrence of the upper-cased concept (not one followed by a colon, a heading, when there are
several), else (2) a case-insensitive match with any run of
whitespace between its words, else (3) the longest run of the concept's first words (then of its
last words) found in the sentence (12 concepts run past their sentence), else (4) the whole
sentence.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from conformance.errors import DatasetError
from conformance.metrics import BinaryCounts

NEGEX_FILE = "Annotations-1-120.txt"
CONTEXT_FILE = "rsAnnotations-1-120-random.txt"

Gold = Literal["negated", "affirmed"]
Located = Literal["exact", "casefold", "partial", "sentence"]
_TEMPORALITY = {"recent": "recent", "historical": "historical", "not particular": "hypothetical"}
_EXPERIENCER = {"patient": "patient", "other": "other", "family member": "other"}
_HEADING = re.compile(r"[ \t]*:")


@dataclass(frozen=True)
class NegexItem:
    """One sentence-concept pair with its gold labels and the concept's span in the sentence."""

    id: str
    sentence: str
    concept: str
    start: int
    end: int
    gold: Gold
    located: Located
    temporality: str | None = None
    experiencer: str | None = None


def _flexible(words: list[str]) -> re.Pattern[str]:
    return re.compile(r"\s+".join(re.escape(w) for w in words), re.IGNORECASE)


def locate(sentence: str, concept: str) -> tuple[int, int, Located]:
    """(start, end, how) of `concept` in `sentence` (see the module docstring)."""
    upper = concept.upper()
    hits = [m.start() for m in re.finditer(re.escape(upper), sentence)] if upper.strip() else []
    if hits:
        # several hits in an upper-case sentence: a heading ("ALLERGIES:") is not the mention
        index = next((h for h in hits if not _HEADING.match(sentence, h + len(upper))), hits[0])
        return index, index + len(upper), "exact"
    words = concept.split()
    if not words:
        return 0, len(sentence), "sentence"
    match = _flexible(words).search(sentence)
    if match:
        return match.start(), match.end(), "casefold"
    for size in range(len(words) - 1, 0, -1):
        for part in (words[:size], words[-size:]):
            match = _flexible(part).search(sentence)
            if match:
                return match.start(), match.end(), "partial"
    return 0, len(sentence), "sentence"


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(str(path), None, f"cannot read: {error}") from error
    if not rows:
        raise DatasetError(str(path), None, "empty file")
    return rows[0], rows[1:]


def load_negex(path: Path) -> list[NegexItem]:
    """The items of a NegEx or ConText annotation file. For a folder: CONTEXT_FILE (the same
    pairs and negation labels as NEGEX_FILE, plus temporality and experiencer) when present."""
    if path.is_dir():
        path = path / (CONTEXT_FILE if (path / CONTEXT_FILE).is_file() else NEGEX_FILE)
    header, rows = _rows(path)
    context = len(header) >= 6 and header[4].lower().startswith("temporality")
    if not context and [h.strip().lower() for h in header[:4]] != [
        "report no.",
        "concept",
        "sentence",
        "negation",
    ]:
        raise DatasetError(str(path), 1, "not a NegEx or ConText annotation header")
    items: list[NegexItem] = []
    for number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < (6 if context else 4):
            raise DatasetError(str(path), number, f"expected {6 if context else 4} columns")
        concept, sentence, negation = row[1], row[2], row[3].strip().lower()
        if negation not in ("negated", "affirmed"):
            raise DatasetError(str(path), number, "negation is neither Affirmed nor Negated")
        temporality = experiencer = None
        if context:
            temporality = _TEMPORALITY.get(row[4].strip().lower())
            experiencer = _EXPERIENCER.get(row[5].strip().lower())
            if temporality is None or experiencer is None:
                raise DatasetError(str(path), number, "unknown temporality or experiencer")
        start, end, located = locate(sentence, concept)
        items.append(
            NegexItem(
                id=f"{path.stem}:{number}",
                sentence=sentence,
                concept=concept,
                start=start,
                end=end,
                gold="negated" if negation == "negated" else "affirmed",
                located=located,
                temporality=temporality,
                experiencer=experiencer,
            )
        )
    return items


@dataclass(frozen=True)
class Prediction:
    """What an assertion function said about one item."""

    negated: bool
    historical: bool = False
    hypothetical: bool = False
    other_experiencer: bool = False


Assessor = Callable[[str, int, int], Prediction]


def _context_assessor(text: str, start: int, end: int) -> Prediction:
    from workers.context import assess

    result = assess(text, start, end, "en")
    return Prediction(
        negated=result.negated,
        historical=result.historical,
        hypothetical=result.hypothetical,
        other_experiencer=result.other_experiencer,
    )


def _binary(pairs: Iterable[tuple[bool, bool]]) -> dict[str, float | None]:
    """Counts and metrics through the shared core (`conformance.metrics`): an undefined ratio is
    None, never 0 or 1."""
    tp = fp = fn = tn = 0
    for gold, predicted in pairs:
        tp += gold and predicted
        fp += predicted and not gold
        fn += gold and not predicted
        tn += not gold and not predicted
    counts = BinaryCounts(tp=tp, fp=fp, fn=fn, tn=tn, n=tp + fp + fn + tn)
    return {
        "n": counts.n,
        "positives": tp + fn,
        "accuracy": counts.accuracy,
        "precision": counts.precision,
        "recall": counts.recall,
        "f1": counts.f1,
        "specificity": counts.specificity,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def score_negex(
    items: list[NegexItem], assessor: Assessor | None = None
) -> dict[str, dict[str, float | None]]:
    """Accuracy, precision, recall and F1 per category (negated; with ConText labels also
    historical, hypothetical, other_experiencer) of `assessor` (default: workers.context.assess,
    English triggers)."""
    run = assessor or _context_assessor
    predictions = [run(item.sentence, item.start, item.end) for item in items]
    scores = {
        "negated": _binary(
            (item.gold == "negated", p.negated) for item, p in zip(items, predictions, strict=True)
        )
    }
    labelled = [(i, p) for i, p in zip(items, predictions, strict=True) if i.temporality]
    if labelled:
        scores["historical"] = _binary(
            (i.temporality == "historical", p.historical) for i, p in labelled
        )
        scores["hypothetical"] = _binary(
            (i.temporality == "hypothetical", p.hypothetical) for i, p in labelled
        )
        scores["other_experiencer"] = _binary(
            (i.experiencer == "other", p.other_experiencer) for i, p in labelled
        )
    return scores
