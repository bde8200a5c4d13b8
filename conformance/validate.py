"""FHIR R4 validation of Bundles and resources with independent checks.

1. the `fhir.resources` R4B models (structure and types);
2. the official R4 JSON schema (`fhir.schema.json`, draft-06) — each Bundle entry's resource is
   checked against its own type's definition, so errors point at the element, not at a
   146-way `oneOf`;
3. project rules, for resources radbridge produced (recognised by the AIAST security label or
   the radbridge evidence extension): every coding has a system and a code, every SNOMED CT /
   LOINC code is in `mappings.terminology`, every Observation is listed in its Bundle's
   DiagnosticReport.result and in a Provenance.target.

The npm `fhir` (FHIR.js) check is a further independent check to be added (issue 5); it is not
run by this module, and `validate_paths` says so in an information-level problem.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from conformance.errors import SchemaUnavailable
from mappings import terminology
from mappings.fhir_out import EXTENSION_BASE

Severity = Literal["error", "warning", "information"]
Resource = dict[str, Any]
SCHEMA_ENV = "RADBRIDGE_FHIR_SCHEMA"
_RELATIVE_SCHEMA = Path("..") / "shared" / "fixtures" / "fhir-r4" / "fhir.schema.json"


@dataclass(frozen=True)
class Problem:
    """One finding of a validation run."""

    path: str
    severity: Severity
    fhirpath: str
    message: str


def format_problem(problem: Problem) -> str:
    """`path<TAB>severity<TAB>fhirpath<TAB>message` (DESIGN.md 'Contracts')."""
    return f"{problem.path}\t{problem.severity}\t{problem.fhirpath}\t{problem.message}"


def find_schema() -> Path:
    """The R4 JSON schema: $RADBRIDGE_FHIR_SCHEMA, else ../shared beside the checkout or cwd."""
    candidates: list[Path] = []
    if os.environ.get(SCHEMA_ENV):
        candidates.append(Path(os.environ[SCHEMA_ENV]))
    repo_root = Path(__file__).resolve().parents[1]
    candidates += [repo_root / _RELATIVE_SCHEMA, Path.cwd() / _RELATIVE_SCHEMA]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise SchemaUnavailable(
        f"the official FHIR R4 JSON schema was not found (set {SCHEMA_ENV}; looked at "
        + ", ".join(str(c) for c in candidates)
        + ")"
    )


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    path = find_schema()
    try:
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaUnavailable(f"{path}: cannot read the R4 JSON schema ({exc})") from None
    return loaded


@functools.lru_cache(maxsize=256)
def _type_validator(resource_type: str) -> Any:
    import jsonschema

    definitions = _schema()["definitions"]
    if resource_type not in definitions:
        return None
    return jsonschema.Draft6Validator(
        {"$ref": f"#/definitions/{resource_type}", "definitions": definitions}
    )


def _fhirpath(base: str, parts: Any) -> str:
    path = base
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _model_problems(resource: Resource, base: str, path: str) -> list[Problem]:
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    try:
        model = get_fhir_model_class(resource["resourceType"])
    except KeyError:
        return [Problem(path, "error", base, f"unknown resourceType {resource['resourceType']!r}")]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [
            Problem(path, "error", _fhirpath(base, err["loc"]), f"R4B model: {err['msg']}")
            for err in exc.errors()
            # entry resources are validated on their own, with their own paths
            if not (resource["resourceType"] == "Bundle" and "resource" in err["loc"])
        ]
    return []


def _schema_problems(resource: Resource, base: str, path: str) -> list[Problem]:
    validator = _type_validator(resource["resourceType"])
    if validator is None:
        return [
            Problem(
                path, "error", base, f"R4 schema: no definition for {resource['resourceType']!r}"
            )
        ]
    problems = []
    for error in validator.iter_errors(resource):
        parts = list(error.absolute_path)
        if resource["resourceType"] == "Bundle" and "resource" in parts:
            continue  # checked per entry below
        problems.append(
            Problem(path, "error", _fhirpath(base, parts), f"R4 schema: {error.message[:300]}")
        )
    return problems


def _walk(value: Any, where: str, key: str = "") -> Iterator[tuple[str, str, Resource]]:
    """(fhirpath, element name, dict) for every nested object of a resource."""
    if isinstance(value, dict):
        yield where, key, value
        for child_key, child in value.items():
            yield from _walk(child, f"{where}.{child_key}", child_key)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _walk(child, f"{where}[{index}]", key)


def _produced_by_radbridge(resource: Resource) -> bool:
    text = json.dumps(resource)
    return '"AIAST"' in text or EXTENSION_BASE in text


def _terminology_problems(resource: Resource, base: str, path: str) -> list[Problem]:
    problems = []
    for where, key, node in _walk(resource, base):
        if key not in ("coding", "security", "tag"):
            continue
        system, code = node.get("system"), node.get("code")
        if not system or not code:
            problems.append(Problem(path, "error", where, "coding without system or code"))
        elif system in (terminology.SNOMED, terminology.LOINC) and not terminology.is_known(
            system, code
        ):
            problems.append(
                Problem(
                    path,
                    "error",
                    where,
                    f"{system}|{code} is not in the project's terminology table",
                )
            )
    return problems


def _link_problems(bundle: Resource, path: str) -> list[Problem]:
    entries = [e.get("resource", {}) for e in bundle.get("entry", []) if isinstance(e, dict)]
    results = {
        ref.get("reference")
        for r in entries
        if r.get("resourceType") == "DiagnosticReport"
        for ref in r.get("result", [])
    }
    targets = {
        ref.get("reference")
        for r in entries
        if r.get("resourceType") == "Provenance"
        for ref in r.get("target", [])
    }
    problems = []
    for index, resource in enumerate(entries):
        if resource.get("resourceType") != "Observation":
            continue
        ref = f"Observation/{resource.get('id')}"
        where = f"Bundle.entry[{index}].resource"
        if ref not in results:
            problems.append(
                Problem(path, "error", where, "Observation is not in any DiagnosticReport.result")
            )
        if ref not in targets:
            problems.append(Problem(path, "error", where, "Observation is not a Provenance.target"))
    return problems


def validate_resource(data: Any, *, path: str = "-") -> list[Problem]:
    """Every problem of one resource or Bundle (an empty list means valid)."""
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        return [Problem(path, "error", "(root)", "not a FHIR resource (no resourceType)")]
    base = data["resourceType"]
    problems = _model_problems(data, base, path) + _schema_problems(data, base, path)
    produced = _produced_by_radbridge(data)
    if base == "Bundle":
        for index, entry in enumerate(data.get("entry", [])):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                where = f"Bundle.entry[{index}].resource"
                problems += _model_problems(resource, where, path) + _schema_problems(
                    resource, where, path
                )
        if produced:
            problems += _link_problems(data, path)
    if produced:
        problems += _terminology_problems(data, base, path)
    return problems


def _json_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.json") if p.is_file())
        else:
            files.append(path)
    return files


def validate_paths(paths: list[Path]) -> list[Problem]:
    """Validate JSON files and folders of JSON files; unreadable JSON is an error problem."""
    _schema()  # fail early and clearly when the schema is missing
    problems: list[Problem] = []
    for file in _json_files(paths):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(
                Problem(str(file), "error", "(file)", f"unreadable JSON: {type(exc).__name__}")
            )
            continue
        problems += validate_resource(data, path=str(file))
    return problems
