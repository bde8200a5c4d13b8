"""The output check of every Bundle radbridge builds, once per Bundle and cheaply (issue 25).

The Bundle and each entry's resource are checked against their own type's definition in the
official FHIR R4 JSON schema (the Bundle's `entry.resource` as an object: each resource is
checked on its own, so a problem names its element and no 146-way `oneOf` is tried; and every
complex type required to be a JSON object, which FHIR JSON says and the schema leaves out), with
one validator compiled once per process by jsonschema-rs (Rust; compiling reads the whole
schema, about 0.2 s, so one validator for all types, not one per type). Measured on the same
Bundles (`benchmarks/output_check.py`): about 20 µs a resource, where the fhir.resources R4B
models took about 1.7 ms to validate one and 5.7 ms to validate and dump it back (what was done
before), and the models let a code outside a required value set through (`Observation.status`
"x"), which the schema refuses.

A Bundle that fails never leaves: `FhirMappingError` names the resource, the element and the
schema's rule, never the value (it may be patient data). `radbridge validate` keeps its three
full checks (`conformance.validate`).

The schema: `schema_path()` is the one place that says where it is: $RADBRIDGE_FHIR_SCHEMA,
else the copy the install puts in `<venv>/share/radbridge/fhir.schema.json`. Nothing is read
from `../shared`. Without it, the R4B Bundle model checks each Bundle instead (slower, and
without the value-set rule above); that is logged once per process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mappings.errors import FhirMappingError
from mappings.reference import looked_in, reference_path

log = logging.getLogger("radbridge.output_check")
_BUILT_FIRST = (
    "Observation",
    "Bundle",
    "Patient",
    "Device",
    "DiagnosticReport",
    "Provenance",
    "ServiceRequest",
    "Flag",
    "Communication",
    "DetectedIssue",
)
"""The types radbridge builds, most frequent first: the chain tries them first."""
SCHEMA_ENV = "RADBRIDGE_FHIR_SCHEMA"
Resource = dict[str, Any]


def schema_path() -> Path | None:
    """The official R4 JSON schema the output check uses: $RADBRIDGE_FHIR_SCHEMA, else the
    installed copy (`mappings.reference`); None without one."""
    configured = os.environ.get(SCHEMA_ENV)
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    return reference_path("fhir.schema.json")


def check_bundle(bundle: Resource) -> None:
    """Check a built Bundle and each of its entries' resources (FhirMappingError if invalid)."""
    _checker().bundle(bundle)


def checked(resource: Resource) -> Resource:
    """`resource` after its check (FhirMappingError if invalid): one resource built on its own
    (a clinician's decision: the new Observation version and its Provenance)."""
    _checker().resource(resource, str(resource.get("resourceType")))
    return resource


@functools.cache
def _checker() -> _SchemaCheck | _ModelCheck:
    """The process's check: the compiled schema, else the R4B models (logged once)."""
    path = schema_path()
    if path is None:
        log.warning(
            "output check: the R4 JSON schema is not installed (%s unset; looked in %s): "
            "Bundles are checked with the R4B models, which is slower",
            SCHEMA_ENV,
            looked_in("fhir.schema.json"),
        )
        return _ModelCheck()
    try:
        definitions = json.loads(path.read_text(encoding="utf-8"))["definitions"]
    except (OSError, ValueError, KeyError) as exc:
        raise FhirMappingError(f"{path}: cannot read the R4 JSON schema ({exc})") from None
    return _SchemaCheck(definitions)


def _path(parts: Iterable[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


class _SchemaCheck:
    """One jsonschema-rs validator of the R4 schema for every resource type, compiled on first
    use: an `if resourceType = T then #/definitions/T else ...` chain over the schema's resource
    types, the types radbridge builds first. Compiling is paid once per process (about 0.2 s),
    not once per type (about 0.13 s each: each compile reads the whole schema), and a resource
    is checked against its own type's definition alone, as fast as with a validator of its own."""

    def __init__(self, definitions: Mapping[str, Any]) -> None:
        # every complex type and resource is a JSON object in FHIR JSON; the official schema
        # leaves `"type": "object"` out of all 659 of them, which lets a string stand where a
        # CodeableConcept belongs (the R4B models refuse that): it is added
        self.definitions = {
            name: {"type": "object", **spec}
            if "properties" in spec and "type" not in spec
            else spec
            for name, spec in definitions.items()
        }
        # Bundle entries are checked on their own, against their own type
        entry = dict(self.definitions["Bundle_Entry"])
        entry["properties"] = {**entry["properties"], "resource": {"type": "object"}}
        self.definitions["Bundle_Entry"] = entry
        listed = [
            str(choice["$ref"]).rsplit("/", 1)[-1]
            for choice in self.definitions.get("ResourceList", {}).get("oneOf", [])
        ]
        self.types = [*_BUILT_FIRST, *(t for t in listed if t not in _BUILT_FIRST)]
        self.known = frozenset(t for t in self.types if t in self.definitions)
        self.compiled: Any = None
        self.lock = threading.Lock()

    def validator(self) -> Any:
        """The compiled validator of every resource type (compiled once)."""
        import jsonschema_rs

        with self.lock:
            if self.compiled is None:
                chain: dict[str, Any] = {"not": {}}  # an unknown type: refused before this
                for kind in reversed([t for t in self.types if t in self.known]):
                    chain = {
                        "if": {"properties": {"resourceType": {"const": kind}}},
                        "then": {"$ref": f"#/definitions/{kind}"},
                        "else": chain,
                    }
                # draft 7 for if/then/else; the schema's keywords (type, properties, items,
                # pattern, enum, const, required, additionalProperties, oneOf, $ref) mean
                # the same in its draft 6
                self.compiled = jsonschema_rs.Draft7Validator(
                    {"definitions": self.definitions, **chain}
                )
                self.definitions = {}  # compiled: the Python copy is no longer read
            return self.compiled

    def bundle(self, bundle: Resource) -> None:
        """The Bundle, then each entry's resource."""
        self.resource(bundle, "Bundle")
        for index, entry in enumerate(bundle.get("entry", [])):
            self.resource(entry["resource"], f"Bundle.entry[{index}].resource")

    def resource(self, resource: Resource, where: str) -> None:
        """One resource against its type's definition."""
        kind = str(resource.get("resourceType"))
        if kind not in self.known:
            raise FhirMappingError(f"built resource has an unknown type {kind!r}")
        validator = self.validator()
        if validator.is_valid(resource):
            return
        error = next(iter(validator.iter_errors(resource)))
        rule = list(error.schema_path)
        definition = rule[1] if len(rule) > 1 and rule[0] == "definitions" else kind
        raise FhirMappingError(
            f"built {kind} is invalid at {where}{_path(error.instance_path)}: it breaks the R4 "
            f"schema's {rule[-1] if rule else 'rule'} of {definition}"
        )


class _ModelCheck:
    """The fhir.resources R4B models: the check without the schema."""

    def bundle(self, bundle: Resource) -> None:
        """The Bundle model (entries included)."""
        self.resource(bundle, "Bundle")

    def resource(self, resource: Resource, where: str) -> None:
        """One resource's model."""
        from fhir.resources.R4B import get_fhir_model_class
        from pydantic import ValidationError

        kind = str(resource.get("resourceType"))
        try:
            get_fhir_model_class(kind).model_validate(resource)
        except KeyError:
            raise FhirMappingError(f"built resource has an unknown type {kind!r}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise FhirMappingError(
                f"built {kind} is invalid at {where}{_path(first['loc'])}: {first['msg']}"
            ) from None
