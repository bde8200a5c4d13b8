"""The whole scout corpus (../shared/fixtures/hl7v2/scout): every frame yields Reports or a typed rejection.

Expected counts were established from the data with independent means, not from this parser:
- 780 `.log` files: `find . -name '*.log' | wc -l`.
- 903 frames: `cat *.log | grep -o '<SB>' | wc -l`.
- 900 frames contain an MSH segment (a 10-line Python regex over `<SB>(.*?)<EB>`, checking b'MSH|');
  the other 3 are the junk/empty cases named in the corpus README: 20190106.log (empty
  `<SB><R><EB>`), 20160829.log (`(.idx/.msg)`), 20230113.log frame 0 (`Unparseable message`).
- Each of the 900 messages has exactly one OBR (count of segments starting `OBR|` = 900).
- 50 of them have no OBX with a non-empty OBX-5 (same script: no segment `OBX|` whose 5th field
  is non-blank), e.g. 19960914.log: ORC/OBR/ZPF/ZDS only -> `no_narrative`.
- So 850 messages give exactly one Report each.
- 20240102.log holds only "Bad file": no frame.
- OBR-25 words (awk -F'|' '{print $26}' on OBR lines): 153 Final, 153 Prelim, 139 Wet Read,
  455 empty; where empty, OBX-11 holds F/P.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mappings.errors import MessageRejected
from mappings.framing import split_frames
from mappings.hl7.oru_in import parse_oru
from mappings.report import Report


@pytest.fixture(scope="module")
def corpus(shared_dir: Path) -> dict[str, object]:
    root = shared_dir / "fixtures" / "hl7v2" / "scout" / "tests" / "ingest" / "staging_test_data"
    files = sorted(root.rglob("*.log"))
    outcomes: Counter[str] = Counter()
    reports: list[Report] = []
    by_file: dict[str, list[str]] = {}
    frames = 0
    for path in files:
        found = split_frames(path.read_bytes())
        frames += len(found)
        if not found:
            outcomes["no_frame"] += 1
        for frame in found:
            try:
                parsed = parse_oru(frame.payload)
            except MessageRejected as exc:
                outcomes[exc.reason] += 1
                by_file.setdefault(path.name, []).append(exc.reason)
                continue
            outcomes["parsed"] += 1
            assert parsed.rejected == ()
            reports.extend(parsed.reports)
            by_file.setdefault(path.name, []).append("parsed")
    return {
        "files": files,
        "frames": frames,
        "outcomes": outcomes,
        "reports": reports,
        "by_file": by_file,
    }


def test_counts(corpus: dict[str, object]) -> None:
    assert len(corpus["files"]) == 780  # type: ignore[arg-type]
    assert corpus["frames"] == 903
    assert corpus["outcomes"] == Counter(
        {"parsed": 850, "no_narrative": 50, "unparsable": 2, "empty_message": 1, "no_frame": 1}
    )
    assert len(corpus["reports"]) == 850  # type: ignore[arg-type]


def test_known_edge_cases(corpus: dict[str, object]) -> None:
    by_file: dict[str, list[str]] = corpus["by_file"]  # type: ignore[assignment]
    assert by_file["20190106.log"] == ["empty_message"]
    assert by_file["20160829.log"] == ["unparsable"]
    assert by_file["20230113.log"][0] == "unparsable"
    assert set(by_file["20230113.log"][1:]) == {"parsed"}  # the rest of the file still parses
    assert "20240102.log" not in by_file  # "Bad file": no frame
    assert by_file["20071021.log"] == ["parsed", "parsed"]  # two identical messages, both parsed


def test_iso_8859_1_file_decodes(shared_dir: Path) -> None:
    path = (
        shared_dir / "fixtures/hl7v2/scout/tests/ingest/staging_test_data/extraction/20250814.log"
    )
    texts = []
    for frame in split_frames(path.read_bytes()):
        try:
            texts.extend(r.text for r in parse_oru(frame.payload).reports)
        except MessageRejected:
            continue
    assert any("±60%÷" in text for text in texts)
    assert not any("\ufffd" in text for text in texts)


def test_reports_are_clean(corpus: dict[str, object]) -> None:
    reports: list[Report] = corpus["reports"]  # type: ignore[assignment]
    for report in reports:
        assert "\r" not in report.text
        assert report.text == report.text.strip("\n")
        assert report.message_control_id
    statuses = Counter(r.result_status.value for r in reports)
    assert set(statuses) <= {"F", "P"}
    assert statuses["F"] > 0 and statuses["P"] > 0
