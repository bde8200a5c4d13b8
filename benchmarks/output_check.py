"""Output-check benchmark: ways to check each Bundle before it leaves, on the same Bundles.

Builds the Bundles of N Open-i chest X-ray reports (rules stage) WITHOUT their output check,
then times each way of checking their resources, in one process and one run, and tells whether
each way catches four broken resources (a code outside its value set, an id with a space, an
empty string, a string where a CodeableConcept belongs; the schema ways require every complex
type to be a JSON object, as `mappings.output_check` does: the official schema leaves that out):

- `model+dump`: the `fhir.resources` R4B model of each resource validated, then dumped back to
  JSON (what `mappings.fhir_out` did before issue 25);
- `model`: the model validated, nothing dumped (the dict radbridge built is what leaves);
- `Bundle model`: the Bundle's model validated once (entries included);
- `jsonschema`, `fastjsonschema`, `jsonschema-rs`: the official R4 JSON schema, each resource
  against its own type's definition (a validator compiled once per type), with the pure-Python
  `jsonschema`, the code generator `fastjsonschema` and the Rust `jsonschema-rs` (an option is
  skipped with a note when its package is not installed).

    .venv/bin/python benchmarks/output_check.py [--reports 300] [--schema PATH]

The schema: --schema, else RADBRIDGE_FHIR_SCHEMA / ../shared (`conformance.validate`).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from throughput import messages_of, openi_texts, parse_all, without_output_check  # noqa: E402

from adapter.settings import Settings  # noqa: E402
from mappings.template import load_builtin_templates  # noqa: E402
from workers.process import process_reports  # noqa: E402

Resource = dict[str, Any]
Check = Callable[[Resource], bool]  # True: valid


def bundles_of(count: int) -> list[Resource]:
    """The Bundles of `count` Open-i reports, built without their output check."""
    settings = Settings(stage="rules")
    reports = parse_all(messages_of(openi_texts(count)), settings)
    templates = list(load_builtin_templates().values())
    with without_output_check():
        results = process_reports(reports, templates, settings, lambda: None).results  # type: ignore[arg-type, return-value]
    return [r.bundle for r in results if r.bundle is not None]


def broken(bundle: Resource) -> list[Resource]:
    """Three copies of an Observation of `bundle`, each broken in one way."""
    observation = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    bad_status, bad_id, empty, scalar = (copy.deepcopy(observation) for _ in range(4))
    bad_status["status"] = "not-a-status"
    bad_id["id"] = "has a space"
    empty["code"]["text"] = ""
    scalar["code"] = "a string where a CodeableConcept belongs"
    return [bad_status, bad_id, empty, scalar]


def model_checks() -> dict[str, Check]:
    """The fhir.resources ways."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    def model_dump(resource: Resource) -> bool:
        try:
            model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        except ValidationError:
            return False
        model.model_dump(mode="json", by_alias=True, exclude_none=True)
        return True

    def model(resource: Resource) -> bool:
        try:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        except ValidationError:
            return False
        return True

    return {"model+dump": model_dump, "model": model}


def schema_checks(schema: Resource) -> tuple[dict[str, Check], list[str]]:
    """The JSON-schema ways that are installed, and notes on those that are not."""
    # as mappings.output_check does: every complex type a JSON object (the schema leaves it out)
    definitions = {
        name: {"type": "object", **spec} if "properties" in spec and "type" not in spec else spec
        for name, spec in schema["definitions"].items()
    }
    checks: dict[str, Check] = {}
    notes: list[str] = []

    def per_type(compile_one: Callable[[Resource], Check]) -> Check:
        compiled: dict[str, Check] = {}

        def check(resource: Resource) -> bool:
            kind = resource["resourceType"]
            if kind not in compiled:
                compiled[kind] = compile_one(
                    {"$ref": f"#/definitions/{kind}", "definitions": definitions}
                )
            return compiled[kind](resource)

        return check

    import jsonschema

    def pure(one: Resource) -> Check:
        validator = jsonschema.Draft6Validator(one)
        return lambda resource: validator.is_valid(resource)

    checks["jsonschema"] = per_type(pure)
    if importlib.util.find_spec("fastjsonschema") is not None:
        import fastjsonschema

        def generated(one: Resource) -> Check:
            validate = fastjsonschema.compile(one)

            def check(resource: Resource) -> bool:
                try:
                    validate(resource)
                except fastjsonschema.JsonSchemaException:
                    return False
                return True

            return check

        checks["fastjsonschema"] = per_type(generated)
    else:
        notes.append("fastjsonschema: not installed")
    if importlib.util.find_spec("jsonschema_rs") is not None:
        import jsonschema_rs

        def rust(one: Resource) -> Check:
            validator = jsonschema_rs.Draft6Validator(one)
            return lambda resource: bool(validator.is_valid(resource))

        checks["jsonschema-rs"] = per_type(rust)
    else:
        notes.append("jsonschema-rs: not installed")
    return checks, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--schema", type=Path, default=None)
    args = parser.parse_args()
    from conformance.validate import find_schema

    schema_path = args.schema or find_schema()
    schema = json.loads(schema_path.read_text("utf-8"))
    bundles = bundles_of(args.reports)
    resources = [entry["resource"] for bundle in bundles for entry in bundle["entry"]]
    faults = broken(bundles[0])
    checks = model_checks()
    schema_ways, notes = schema_checks(schema)
    checks.update(schema_ways)
    rows = []
    for name, check in checks.items():
        for resource in resources[:50]:  # warm-up: compiled validators, model classes
            check(resource)
        started = time.perf_counter()
        valid = sum(check(resource) for resource in resources)
        seconds = time.perf_counter() - started
        caught = sum(not check(fault) for fault in faults)
        rows.append((name, seconds, valid, caught))
    started = time.perf_counter()
    bundle_model_valid = _bundle_model(bundles)
    bundle_seconds = time.perf_counter() - started
    caught = sum(not _bundle_model([_with(bundles[0], fault)]) for fault in faults)
    rows.append(("Bundle model", bundle_seconds, bundle_model_valid, caught))
    print(
        f"\noutput check: {len(bundles)} Bundles, {len(resources)} resources "
        f"({len(resources) / len(bundles):.1f} per Bundle); load {os.getloadavg()[0]:.2f}"
    )
    base = rows[0][1]
    print(
        f"{'way':<15} {'ms/Bundle':>10} {'µs/resource':>12} {'vs model+dump':>14} {'valid':>7} {'caught':>7}"
    )
    for name, seconds, valid, caught in rows:
        print(
            f"{name:<15} {seconds * 1000 / len(bundles):>10.3f} "
            f"{seconds * 1e6 / len(resources):>12.1f} {base / seconds:>13.1f}x "
            f"{valid:>7} {caught:>5}/{len(faults)}"
        )
    for note in notes:
        print(f"note: {note}")


def _with(bundle: Resource, resource: Resource) -> Resource:
    """`bundle` with `resource` in place of the entry of the same id."""
    entries = [
        {**e, "resource": resource} if e["resource"]["id"] == resource.get("id") else e
        for e in bundle["entry"]
    ]
    if all(e["resource"] is not resource for e in entries):
        entries.append(
            {
                "fullUrl": "urn:uuid:x",
                "resource": resource,
                "request": {"method": "PUT", "url": "Observation/x"},
            }
        )
    return {**bundle, "entry": entries}


def _bundle_model(bundles: list[Resource]) -> int:
    """How many Bundles their Bundle model finds valid."""
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    valid = 0
    for bundle in bundles:
        try:
            Bundle.model_validate(bundle)
        except ValidationError:
            continue
        valid += 1
    return valid


if __name__ == "__main__":
    main()
