"""FHIR R4 validation of Bundles and resources with three independent checks.

1. the `fhir.resources` R4B models (structure and types);
2. the official R4 JSON schema (`fhir.schema.json`, draft-06) — each Bundle entry's resource is
   checked against its own type's definition, so errors point at the element, not at a
   146-way `oneOf`;
3. FHIR.js (npm `fhir`, pinned 4.12.0, R4 profiles shipped in the package, offline): one node
   process for all documents of a `validate_documents` call (`conformance/fhirjs_validate.js`).
   Its fatal/error messages are errors; its "Code … not found in value set" warnings are
   dropped (FHIR.js only ships value sets for required bindings and emits that warning for
   every coding under an example/preferred binding, e.g. every LOINC or SNOMED CT code in
   Observation.code, valid or not); its other warnings are kept. Without `node` or the package
   the check is skipped with an information-level problem saying so — never silently;

and project rules, for resources radbridge produced (recognised by the AIAST security label or
the radbridge evidence extension): every coding has a system and a code; every SNOMED CT /
LOINC code is known (radbridge's own codes in `mappings.terminology`, the installed SNOMED CT
GPS / LOINC tables, or a code a loaded template cites) and not on the do-not-use list, with the
known display (a different display is a warning); every UCUM quantity code is valid UCUM
(`mappings.ucum`); in a Bundle, every Observation is listed in a
DiagnosticReport.result and in a Provenance.target, every such reference resolves to an
Observation of the Bundle, and every Provenance names the Bundle's DiagnosticReport as entity.

`validate_resource` runs checks 1, 2 and the project rules on one resource (fast, in-process);
`validate_documents` / `validate_paths` add FHIR.js.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from conformance.errors import ConformanceError, SchemaUnavailable
from mappings import terminology
from mappings.fhir_out import EXTENSION_BASE
from mappings.reference import INSTALL_HINT, looked_in, reference_path
from mappings.template import Template, load_builtin_templates, template_codes
from mappings.terminology_tables import table_display
from mappings.ucum import ucum_problem

Severity = Literal["error", "warning", "information"]
Resource = dict[str, Any]
SCHEMA_ENV = "RADBRIDGE_FHIR_SCHEMA"
SCHEMA_FILE = "fhir.schema.json"
SCHEMA_DIGEST = "d36a5528b84c3e37d76ea26fc76159895d32263e294e5d47884ef66b2eec9f7e"
"""SHA-256 of the official R4 (4.0.1) JSON schema's validating content (`schema_digest`): what
every copy of the official file shares, however it is indented or its descriptions translated."""
FHIRJS_VERSION = "4.12.0"  # keep in step with the Makefile
FHIRJS_TIMEOUT_S = 300
FHIRJS_VALUE_SET_NOISE = "not found in value set"


@dataclass(frozen=True)
class Problem:
    """One finding of a validation run."""

    path: str
    severity: Severity
    fhirpath: str
    message: str


def format_problem(problem: Problem) -> str:
    """`path<TAB>severity<TAB>fhirpath<TAB>message` (README, radbridge validate)."""
    return f"{problem.path}\t{problem.severity}\t{problem.fhirpath}\t{problem.message}"


def find_schema() -> Path:
    """The R4 JSON schema: $RADBRIDGE_FHIR_SCHEMA, else the installed copy
    (`<venv>/share/radbridge/fhir.schema.json`, scripts/install-reference-data.sh)."""
    if os.environ.get(SCHEMA_ENV):
        candidate = Path(os.environ[SCHEMA_ENV])
        if candidate.is_file():
            return candidate.resolve()
        raise SchemaUnavailable(f"{SCHEMA_ENV}={candidate}: no such file")
    installed = reference_path(SCHEMA_FILE)
    if installed is None:
        raise SchemaUnavailable(
            f"the official FHIR R4 JSON schema is not installed (looked in "
            f"{looked_in(SCHEMA_FILE)}): {INSTALL_HINT}; or set {SCHEMA_ENV}"
        )
    return installed.resolve()


def schema_digest(schema: Any) -> str:
    """SHA-256 of a JSON schema without its `description` texts (canonical JSON: sorted keys,
    no spaces): equal for two copies that validate the same."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "description"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    canonical = json.dumps(strip(schema), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    path = find_schema()
    try:
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaUnavailable(f"{path}: cannot read the R4 JSON schema ({exc})") from None
    if schema_digest(loaded) != SCHEMA_DIGEST:
        raise SchemaUnavailable(
            f"{path} is not the official FHIR R4 (4.0.1) JSON schema (its content differs)"
        )
    return loaded


@functools.lru_cache(maxsize=256)
def _type_validator(resource_type: str) -> Any:
    import jsonschema

    definitions = _schema()["definitions"]
    if resource_type not in definitions:
        return None
    if resource_type == "Bundle":
        # Entry resources are validated on their own, against their own type: here the
        # 146-way `oneOf` of ResourceList would only cost time (about 1 s per Bundle).
        entry = dict(definitions["Bundle_Entry"])
        entry["properties"] = {**entry["properties"], "resource": {"type": "object"}}
        definitions = {**definitions, "Bundle_Entry": entry}
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


def _template_displays(templates: Sequence[Template]) -> dict[tuple[str, str], str]:
    return {
        (code.system, code.code): code.display
        for template in templates
        for _, code in template_codes(template)
    }


def _known_display(system: str, code: str, cited: dict[tuple[str, str], str]) -> str | None:
    entry = terminology.lookup(system, code)
    if entry is not None:
        return entry.display
    return table_display(system, code) or cited.get((system, code))


def _terminology_problems(
    resource: Resource, base: str, path: str, templates: Sequence[Template] | None
) -> list[Problem]:
    cited = _template_displays(
        list(load_builtin_templates().values()) if templates is None else templates
    )
    problems = []
    for where, key, node in _walk(resource, base):
        if key == "valueQuantity" and node.get("system") == terminology.UCUM:
            if (unit_problem := ucum_problem(str(node.get("code", "")))) is not None:
                problems.append(Problem(path, "error", f"{where}.code", unit_problem))
            continue
        if key not in ("coding", "security", "tag"):
            continue
        system, code = node.get("system"), node.get("code")
        if not system or not code:
            problems.append(Problem(path, "error", where, "coding without system or code"))
            continue
        if system not in (terminology.SNOMED, terminology.LOINC):
            continue
        display = _known_display(system, code, cited)
        if (system, code) in terminology.DO_NOT_USE:
            message = f"{system}|{code} is on the project's do-not-use list"
            problems.append(Problem(path, "error", where, message))
        elif display is None:
            message = (
                f"{system}|{code} is neither radbridge's own code, in the installed SNOMED CT / "
                "LOINC tables, nor cited by a template"
            )
            problems.append(Problem(path, "error", where, message))
        elif node.get("display") and node["display"] != display:
            message = f"{system}|{code} display {node['display']!r} is not {display!r}"
            problems.append(Problem(path, "warning", where, message))
    return problems


def _references(resources: list[Resource], resource_type: str, element: str) -> set[str]:
    refs: set[str] = set()
    for resource in resources:
        if resource.get("resourceType") != resource_type:
            continue
        for item in resource.get(element, []):
            target = item.get("what") if element == "entity" else item
            if isinstance(target, dict) and isinstance(target.get("reference"), str):
                refs.add(target["reference"].split("/_history/")[0])  # a version: its resource
    return refs


def _link_problems(bundle: Resource, path: str) -> list[Problem]:
    entries = [e.get("resource", {}) for e in bundle.get("entry", []) if isinstance(e, dict)]
    present = {f"{r.get('resourceType')}/{r.get('id')}" for r in entries}
    results = _references(entries, "DiagnosticReport", "result")
    targets = _references(entries, "Provenance", "target")
    problems = []
    for index, resource in enumerate(entries):
        where = f"Bundle.entry[{index}].resource"
        kind = resource.get("resourceType")
        # an Observation retired by a superseding result is carried to be retired, not linked
        retired = resource.get("status") in ("entered-in-error", "cancelled")
        if kind == "Observation" and not retired:
            ref = f"Observation/{resource.get('id')}"
            if ref not in results:
                message = "Observation is not in any DiagnosticReport.result"
                problems.append(Problem(path, "error", where, message))
            if ref not in targets:
                message = "Observation is not a Provenance.target"
                problems.append(Problem(path, "error", where, message))
        elif kind in ("DiagnosticReport", "Provenance"):
            element = "result" if kind == "DiagnosticReport" else "target"
            for position, item in enumerate(resource.get(element, [])):
                target = item.get("reference") if isinstance(item, dict) else None
                if isinstance(target, str):  # `Observation/<id>/_history/<vid>`: that version
                    target = target.split("/_history/")[0]
                # a Provenance also targets the insight resources (ServiceRequest, Flag, ...)
                wanted = "Observation/" if kind == "DiagnosticReport" else ""
                if not (
                    isinstance(target, str) and target.startswith(wanted) and target in present
                ):
                    what = "an Observation" if wanted else "a resource"
                    message = f"{kind}.{element} {target!r} is not {what} of this Bundle"
                    problems.append(
                        Problem(path, "error", f"{where}.{element}[{position}]", message)
                    )
            if kind == "Provenance":
                sources = _references([resource], "Provenance", "entity")
                if not any(
                    ref.startswith("DiagnosticReport/") and ref in present for ref in sources
                ):
                    message = "Provenance.entity does not name this Bundle's DiagnosticReport"
                    problems.append(Problem(path, "error", where, message))
    return problems


def validate_resource(
    data: Any, *, path: str = "-", templates: Sequence[Template] | None = None
) -> list[Problem]:
    """Every problem of one resource or Bundle (an empty list means valid); `templates` (default:
    the built-in ones) are those whose cited codes count as known."""
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
        if produced and data.get("type") not in ("searchset", "history"):
            problems += _link_problems(data, path)  # a result Bundle, not a page of a search
    if produced:
        problems += _terminology_problems(data, base, path, templates)
    return problems


def _json_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.json") if p.is_file())
        else:
            files.append(path)
    return files


def find_fhirjs() -> Path | None:
    """The installed npm `fhir` package: `<venv>/node/node_modules/fhir` (make venv puts it
    there), else `.venv/node/…` in the checkout; None when neither exists."""
    repo_root = Path(__file__).resolve().parents[1]
    for prefix in (Path(sys.prefix) / "node", repo_root / ".venv" / "node"):
        candidate = prefix / "node_modules" / "fhir"
        if (candidate / "package.json").is_file():
            return candidate
    return None


def _fhirjs_path(document: Resource, location: str, resource_id: str | None) -> str:
    """FHIR.js gives `Type.element` plus the resource id; inside a Bundle, find the entry."""
    if not location:
        return "(root)"
    head, _, rest = location.partition(".")
    tail = f".{rest}" if rest else ""
    if document.get("resourceType") == "Bundle" and not (
        head == "Bundle" and resource_id in (None, document.get("id"))
    ):
        for index, entry in enumerate(document.get("entry") or []):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if (
                isinstance(resource, dict)
                and resource.get("resourceType") == head
                and resource.get("id") == resource_id
            ):
                return f"Bundle.entry[{index}].resource{tail}"
    return location


def _fhirjs_problem(document: Resource, path: str, message: dict[str, Any]) -> Problem | None:
    severity = str(message.get("severity", "error"))
    text = str(message.get("message", ""))
    if severity == "info" or (severity == "warning" and FHIRJS_VALUE_SET_NOISE in text):
        return None
    resource_id = message.get("resourceId")
    where = _fhirjs_path(
        document,
        str(message.get("location") or ""),
        str(resource_id) if resource_id is not None else None,
    )
    return Problem(
        path, "warning" if severity == "warning" else "error", where, f"npm fhir: {text[:300]}"
    )


def fhirjs_problems(documents: Sequence[tuple[str, Resource]]) -> tuple[list[Problem], str | None]:
    """(problems, notice): FHIR.js over all documents in one node process. The notice says why
    the check was skipped (node or the package missing), else None."""
    if not documents:
        return [], None
    node = shutil.which("node")
    if node is None:
        return [], "npm fhir check skipped: node not found"
    module = find_fhirjs()
    if module is None:
        return [], (
            f"npm fhir check skipped: package fhir not installed (make venv installs "
            f"fhir@{FHIRJS_VERSION} into .venv/node)"
        )
    script = Path(__file__).with_name("fhirjs_validate.js")
    try:
        completed = subprocess.run(
            [node, str(script), str(module)],
            input=json.dumps([doc for _, doc in documents]).encode("utf-8"),
            capture_output=True,
            timeout=FHIRJS_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConformanceError(f"npm fhir check ran longer than {FHIRJS_TIMEOUT_S} s") from None
    if completed.returncode != 0:
        detail = completed.stderr.decode("utf-8", errors="replace").strip()[-300:]
        raise ConformanceError(
            f"npm fhir check failed (exit {completed.returncode}): {detail}"
        ) from None
    output = json.loads(completed.stdout)
    problems: list[Problem] = []
    for (path, document), messages in zip(documents, output["results"], strict=True):
        for message in messages:
            problem = _fhirjs_problem(document, path, message)
            if problem is not None:
                problems.append(problem)
    return problems, None


def validate_documents(
    documents: Sequence[tuple[str, Any]],
    *,
    fhirjs: bool = True,
    templates: Sequence[Template] | None = None,
) -> list[Problem]:
    """Every problem of (path, parsed JSON) documents: models, schema and project rules per
    document, then FHIR.js over all of them at once (or its skip notice)."""
    problems: list[Problem] = []
    resources: list[tuple[str, Resource]] = []
    for path, data in documents:
        found = validate_resource(data, path=path, templates=templates)
        problems += found
        if not (found and found[0].fhirpath == "(root)"):
            resources.append((path, data))
    if fhirjs:
        extra, notice = fhirjs_problems(resources)
        if notice is not None:
            problems.append(Problem("-", "information", "(npm fhir)", notice))
        order = {path: index for index, (path, _) in enumerate(documents)}
        problems = sorted(problems + extra, key=lambda p: order.get(p.path, len(order)))
    return problems


def validate_paths(
    paths: list[Path], *, fhirjs: bool = True, templates: Sequence[Template] | None = None
) -> list[Problem]:
    """Validate JSON files and folders of JSON files; unreadable JSON is an error problem."""
    _schema()  # fail early and clearly when the schema is missing
    problems: list[Problem] = []
    documents: list[tuple[str, Any]] = []
    for file in _json_files(paths):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(
                Problem(str(file), "error", "(file)", f"unreadable JSON: {type(exc).__name__}")
            )
            continue
        documents.append((str(file), data))
    return problems + validate_documents(documents, fhirjs=fhirjs, templates=templates)
