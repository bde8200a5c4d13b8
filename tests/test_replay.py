"""`radbridge replay` against a real `radbridge serve` (subprocess, embedded Redis and SQLite,
RADBRIDGE_STAGE=rules, an API key), over MLLP and over HTTP, with the hand-reviewed goldens in
tests/fixtures/replay/; plus the normalisation and JUnit writing on their own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.golden import (
    normalise_ack,
    normalise_http_answer,
    normalise_resource,
    unified_diff,
)
from conformance.junit import CaseResult, write_junit
from conformance.replay import ReplayError, api_base, find_fixtures, parse_target
from tests.serve_process import RADBRIDGE, Service, running_serve

REPLAY_DIR = Path(__file__).parent / "fixtures" / "replay"
API_KEY = "replay-test-key"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`radbridge serve` with the rules stage (no model) and an API key."""
    settings = {
        "RADBRIDGE_STAGE": "rules",
        "RADBRIDGE_API_KEY": API_KEY,
        "RADBRIDGE_N_THREADS": "1",
    }
    with running_serve(tmp_path_factory.mktemp("serve"), settings) as running:
        yield running


def replay(
    directory: Path, *args: str, key: str | None = API_KEY
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("RADBRIDGE_API_KEY", None)
    if key is not None:
        env["RADBRIDGE_API_KEY"] = key
    return subprocess.run(
        [*RADBRIDGE, "replay", str(directory), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def junit_counts(path: Path) -> dict[str, int]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return {key: int(suite.attrib[key]) for key in ("tests", "failures", "errors", "skipped")}


def fixtures_only(target: Path) -> Path:
    """A copy of the replay fixtures without their goldens."""
    target.mkdir()
    for fixture in find_fixtures(REPLAY_DIR):
        shutil.copy(fixture.path, target / fixture.path.name)
    return target


# -- against the running service -------------------------------------------------------------


@pytest.mark.integration
def test_replay_over_mllp_matches_the_goldens(service: Service, tmp_path: Path) -> None:
    junit = tmp_path / "replay.xml"
    result = replay(
        REPLAY_DIR, "--to", service.mllp, "--api", service.http, "--timeout", "90",
        "--junit", str(junit),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr + service.log.read_text()[-3000:]
    fixtures = find_fixtures(REPLAY_DIR)
    assert junit_counts(junit) == {
        "tests": 2 * len(fixtures),
        "failures": 0,
        "errors": 0,
        "skipped": 0,
    }
    cases = ET.parse(junit).getroot().iter("testcase")
    assert {c.attrib["classname"] for c in cases} == {"replay.hl7v2.mllp", "replay.fhir.http"}
    assert "8 checks: 8 passed, 0 failed, 0 errors" in result.stdout


@pytest.mark.integration
def test_replay_over_http_matches_the_same_goldens(service: Service, tmp_path: Path) -> None:
    junit = tmp_path / "replay.xml"
    result = replay(REPLAY_DIR, "--to", service.http, "--timeout", "90", "--junit", str(junit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert junit_counts(junit)["failures"] == 0
    assert {c.attrib["classname"] for c in ET.parse(junit).getroot().iter("testcase")} == {
        "replay.hl7v2.http",
        "replay.fhir.http",
    }


@pytest.mark.integration
def test_tampered_golden_fails_with_a_diff_of_the_field(service: Service, tmp_path: Path) -> None:
    folder = tmp_path / "tampered"
    shutil.copytree(REPLAY_DIR, folder)
    golden = folder / "chest_xray.fhir.json"
    text = golden.read_text("utf-8")
    assert text.count('"valueString": "No pneumothorax"') == 1
    golden.write_text(text.replace('"text": "absent"', '"text": "uncertain"', 1), "utf-8")
    junit = tmp_path / "replay.xml"
    result = replay(
        folder, "--to", service.mllp, "--api", service.http, "--timeout", "90",
        "--junit", str(junit),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert '-            "text": "uncertain"' in result.stdout
    assert '+            "text": "absent"' in result.stdout
    assert "chest_xray.fhir.json (golden)" in result.stdout
    assert junit_counts(junit)["failures"] == 1
    (failure,) = ET.parse(junit).getroot().iter("failure")
    assert '"text": "uncertain"' in (failure.text or "")


@pytest.mark.integration
def test_update_golden_reproduces_the_reviewed_goldens(service: Service, tmp_path: Path) -> None:
    folder = fixtures_only(tmp_path / "fresh")
    missing = replay(folder, "--to", service.mllp, "--api", service.http, "--timeout", "90")
    assert missing.returncode == 1
    assert "no golden file chest_xray.ack" in missing.stdout
    result = replay(
        folder, "--to", service.mllp, "--api", service.http, "--timeout", "90", "--update-golden"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "review each by hand" in result.stderr
    for fixture in find_fixtures(REPLAY_DIR):
        for golden in (fixture.ack_golden, fixture.fhir_golden):
            written = (folder / golden.name).read_text("utf-8")
            assert written == golden.read_text("utf-8"), golden.name


@pytest.mark.integration
def test_wrong_api_key_is_an_error_not_a_pass(service: Service, tmp_path: Path) -> None:
    result = replay(REPLAY_DIR, "--to", service.http, "--timeout", "30", key="wrong")
    assert result.returncode == 1
    assert "HTTP 401" in result.stdout


def test_bad_options_exit_2(tmp_path: Path) -> None:
    assert replay(REPLAY_DIR, "--to", "ftp://127.0.0.1:1").returncode == 2
    assert replay(tmp_path / "missing", "--to", "mllp://127.0.0.1:1").returncode == 2
    assert replay(REPLAY_DIR, "--to", "mllp://127.0.0.1:1", "--timeout", "0").returncode == 2


# -- normalisation, goldens and JUnit on their own --------------------------------------------


def test_normalise_ack_replaces_only_the_volatile_fields() -> None:
    ack = (
        b"MSH|^~\\&|RADBRIDGE|H|RIS|H|20261124093000||ACK^R01^ACK|RB1732440000.7|P|2.5\r"
        b"MSA|AR|MSG01\rERR|||200^not accepted^HL70357|E\r"
    )
    assert normalise_ack(ack) == (
        "MSH|^~\\&|RADBRIDGE|H|RIS|H|<timestamp>||ACK^R01^ACK|<control-id>|P|2.5\n"
        "MSA|AR|MSG01\n"
        "ERR|||200^not accepted^HL70357|E\n"
    )
    assert normalise_ack(b"MSH#^~\\&#A#B#C#D#20260101##ACK#X1#P#2.3\rMSA#AA#M1") == (
        "MSH#^~\\&#A#B#C#D#<timestamp>##ACK#<control-id>#P#2.3\nMSA#AA#M1\n"
    )
    assert normalise_ack(None) == "(no acknowledgement)\n"


def test_normalise_http_answer_hides_job_numbers_and_duplicates() -> None:
    body = json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"diagnostics": "accepted as job 17 (1 report(s)) (duplicate)"}],
        }
    ).encode()
    text = normalise_http_answer(202, body, "/jobs/17")
    assert text.startswith("HTTP 202\nLocation: /jobs/<job>\n")
    assert '"accepted as job <job> (1 report(s))"' in text
    assert "17" not in text


def test_normalise_resource_keeps_ids_and_rules_confidence() -> None:
    def observation(stage: str) -> dict[str, object]:
        return {
            "resourceType": "Observation",
            "id": "fixed-uuid",
            "meta": {"lastUpdated": "2026-11-24T09:00:00Z", "versionId": "3"},
            "issued": "2026-11-24T09:00:00+00:00",
            "extension": [
                {
                    "url": "https://radbridge.org/fhir/StructureDefinition/evidence",
                    "extension": [
                        {"url": "confidence", "valueDecimal": 0.8731},
                        {"url": "stage", "valueCode": stage},
                    ],
                }
            ],
        }

    llm = normalise_resource(observation("llm"))
    assert llm["id"] == "fixed-uuid"
    assert llm["issued"] == "<instant>"
    assert llm["meta"] == {"lastUpdated": "<instant>", "versionId": "<version>"}
    assert llm["extension"][0]["extension"][0]["valueDecimal"] == "<confidence>"
    rules = normalise_resource(observation("rules"))
    assert rules["extension"][0]["extension"][0]["valueDecimal"] == 0.8731
    provenance = normalise_resource({"resourceType": "Provenance", "recorded": "2026-11-24"})
    assert provenance["recorded"] == "<instant>"


def test_unified_diff_names_the_golden() -> None:
    assert unified_diff("a\nb\n", "a\nb\n", "x.ack") == ""
    diff = unified_diff("a\nb\n", "a\nc\n", "x.ack")
    assert diff.splitlines()[:2] == ["--- x.ack (golden)", "+++ x.ack (replayed)"]
    assert "-b" in diff.splitlines() and "+c" in diff.splitlines()


def test_junit_counts_and_escapes(tmp_path: Path) -> None:
    path = tmp_path / "out" / "junit.xml"
    cases = [
        CaseResult("a.ack", "replay.hl7v2.mllp", "passed", 0.25),
        CaseResult("a.fhir", "replay.hl7v2.mllp", "failed", 0.5, "differs", '-"x" <y>\x0b\n+z'),
        CaseResult("b.fhir", "replay.fhir.http", "error", 0.0, "timeout"),
        CaseResult("c.fhir", "replay.fhir.http", "skipped"),
    ]
    write_junit(path, "radbridge replay", cases)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert junit_counts(path) == {"tests": 4, "failures": 1, "errors": 1, "skipped": 1}
    (failure,) = root.iter("failure")
    assert failure.attrib["message"] == "differs"
    assert failure.text == '-"x" <y>\ufffd\n+z'
    (error,) = root.iter("error")
    assert error.attrib["message"] == "timeout"
    assert root.find("testsuite") is not None
    assert float(root.attrib["time"]) == pytest.approx(0.75)


def test_targets_and_api_base() -> None:
    mllp = parse_target("mllp://10.0.0.5:2575")
    assert (mllp.scheme, mllp.host, mllp.port) == ("mllp", "10.0.0.5", 2575)
    assert api_base(mllp, None, 8080) == "http://10.0.0.5:8080"
    assert api_base(mllp, "http://api:9000/", 8080) == "http://api:9000"
    http = parse_target("http://localhost:8080/")
    assert api_base(http, None, 1) == "http://localhost:8080"
    for bad in ("mllp://host", "ftp://host:1", "host:1", "mllp://host:port"):
        with pytest.raises(ReplayError):
            parse_target(bad)


def test_find_fixtures_skips_goldens_and_notes(tmp_path: Path) -> None:
    for name in ("a.hl7", "a.ack", "a.fhir.json", "b.json", "README.md", ".hidden.hl7"):
        (tmp_path / name).write_text("{}" if name.endswith("json") else "MSH|", "utf-8")
    found = find_fixtures(tmp_path)
    assert [(f.path.name, f.kind) for f in found] == [("a.hl7", "hl7v2"), ("b.json", "fhir")]
    assert found[0].ack_golden == tmp_path / "a.ack"
    assert found[1].fhir_golden == tmp_path / "b.fhir.json"
    (tmp_path / "a.txt").write_text("MSH|", "utf-8")
    with pytest.raises(ReplayError, match="share a golden name"):
        find_fixtures(tmp_path)


def test_committed_fixtures_each_have_both_goldens() -> None:
    fixtures = find_fixtures(REPLAY_DIR)
    assert {f.kind for f in fixtures} == {"hl7v2", "fhir"}
    for fixture in fixtures:
        assert fixture.ack_golden.is_file() and fixture.fhir_golden.is_file(), fixture.name
