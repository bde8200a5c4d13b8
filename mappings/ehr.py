"""What radbridge writes to a FHIR EHR for one report (pure; README "Identity at the EHR").

radbridge's own Bundle (`mappings.fhir_out`) keys everything on its own ids and carries an
identifier-only Patient; the EHR must receive the report against ITS Patient and ITS
DiagnosticReport, with references that resolve there. This module decides, from the `Report`
(what the source sent) and the `IdentityPolicy` (settings), how:

- `identity`: the Patient is the FHIR source's own (`subject.reference` as sent), else it is
  found by an identifier WITH a system: a FHIR identifier's own system; an HL7 PID-3 whose
  assigning authority carries an OID (CX-4.2/4.3 `ISO` -> `urn:oid:`) or a URI, or whose
  namespace (CX-4.1) is mapped in `RADBRIDGE_IDENTIFIER_SYSTEMS`; a PID-3 without an authority
  takes `RADBRIDGE_PATIENT_IDENTIFIER_SYSTEM`. The first PID-3 repetition with a system is the
  key. No key: `IdentityRefused` (never a stub Patient). The DiagnosticReport is the FHIR
  source's own (same id; its identifiers with their systems), else the one whose identifier is
  the accession (OBR-3) with a system (EI-3/4 OID or URI, EI-2 mapped, or the sending facility
  mapped in `RADBRIDGE_ACCESSION_SYSTEMS`).
- `plan`: given what the sender read at the EHR (`EhrState`: the Patient found, the EHR's
  DiagnosticReport and its version), the transaction: radbridge's own resources (Device,
  Observations, the insights - ServiceRequest, Flag, Communication, DetectedIssue - and the
  extraction Provenance) as `PUT Type/id` with references rewritten to the EHR's Patient and
  DiagnosticReport (a retired or decided one is a new version of the same id); the EHR's
  DiagnosticReport updated WITHOUT dropping its own fields (its `result` gains the
  Observations, the RADS categories included: the whole resource on the version read, sent in
  the transaction with them (`write_transaction`), or a JSON Patch, RADBRIDGE_EHR_PATCH, sent
  after the transaction so the Observations exist first);
  a DiagnosticReport created only when the EHR has none (and replaced on the version read when
  it is radbridge's own: a corrected source report); a Patient created only by conditional
  create (`If-None-Exist`) when the policy says so. Only what changed since the last delivery
  to this EHR is sent (`hashes`). With `hold_flags` (RADBRIDGE_FLAGS_HOLD_UNTIL_REVIEW) a Flag
  not accepted yet (or rejected and never sent) is left out (`mappings.flag_hold`), and the
  extraction Provenance names no Flag the EHR does not hold.
- `write_transaction`: what is POSTed. A whole-resource update of the EHR's DiagnosticReport
  rides in the transaction as one more entry, `PUT` with `request.ifMatch` on the version read
  (FHIR R4 Bundle.entry.request.ifMatch), so the results and the report's link to them land
  together or not at all, in one request; a stale version fails the whole transaction (409/412).
  An update with nothing else to send stays a plain `PUT` with `If-Match` (one request either
  way, and the form every server honours); a JSON Patch stays a `PATCH` after the transaction.
  A server that ignores `ifMatch` inside a transaction (some do) overwrites a concurrent change
  to its report: use RADBRIDGE_EHR_PATCH there.
- `review_transaction`: the clinicians' decisions (VERIFY Provenance, on Observations and on
  insights) sent after them, their targets carrying the version the EHR returned (or no
  version), the reviewer referenced by identifier or conditionally created; none on a held Flag.

A report without Observations and without insights adds nothing: nothing is written back.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from mappings import terminology as term
from mappings.errors import IdentityRefused
from mappings.fhir_out import deterministic_id, diagnostic_report_of
from mappings.flag_hold import held_flags, provenance_targets, without_targets
from mappings.report import EntityIdentifier, PatientIdentifier, Report

Resource = dict[str, Any]
# radbridge's insights (issue 20): written like the Observations, under radbridge's ids
_INSIGHTS = ("ServiceRequest", "Flag", "Communication", "DetectedIssue")
_CONTENT = ("Observation", *_INSIGHTS)  # what makes a report worth writing back
_OWN = ("Device", *_CONTENT)  # radbridge-owned, written with PUT under radbridge's ids


@dataclass(frozen=True)
class IdentityPolicy:
    """The identity settings (adapter.settings: identifier_systems, accession_systems,
    patient_identifier_system, ehr_patient, ehr_reviewer, reviewer_identifier_system)."""

    identifier_systems: Mapping[str, str] = field(default_factory=dict)
    accession_systems: Mapping[str, str] = field(default_factory=dict)
    patient_system: str | None = None
    create_patient: bool = False
    create_reviewer: bool = False
    reviewer_system: str = "https://radbridge.org/fhir/sid/reviewer"


@dataclass(frozen=True)
class Key:
    """An identifier with a system: what a search or a conditional create matches on."""

    system: str
    value: str

    @property
    def query(self) -> str:
        """The search parameters `identifier=system|value` (URL-encoded)."""
        return f"identifier={quote(self.system, safe=':/')}|{quote(self.value, safe='')}"

    def identifier(self, type_code: str | None = None) -> Resource:
        """As a FHIR Identifier (with a v2-0203 type when given)."""
        found: Resource = {"system": self.system, "value": self.value}
        if type_code is not None:
            found["type"] = {
                "coding": [
                    {
                        "system": term.V2_0203,
                        "code": type_code,
                        "display": term.require(term.V2_0203, type_code).display,
                    }
                ]
            }
        return found


@dataclass(frozen=True)
class Identity:
    """Who and what a report is at the EHR."""

    patient_reference: str | None  # FHIR input: `Patient/<id>` as the source sent it
    patient_key: Key | None  # found by this identifier
    patient_identifiers: tuple[Key, ...]  # every identifier with a system (conditional create)
    report_reference: str | None  # FHIR input: `DiagnosticReport/<source id>`
    report_key: Key | None  # the accession (HL7) or the source identifier with a system
    report_identifiers: tuple[Resource, ...]  # what a DiagnosticReport radbridge creates carries

    @property
    def patient(self) -> str:
        """A stable name of the Patient (for change detection, never logged)."""
        if self.patient_reference:
            return self.patient_reference
        assert self.patient_key is not None
        return f"Patient?{self.patient_key.query}"


@dataclass(frozen=True)
class EhrState:
    """What the sender read at the EHR before writing."""

    patient: str | None  # `Patient/<id>` found (or as sent); None: conditionally created
    report: Resource | None  # the EHR's DiagnosticReport as read; None: radbridge creates it
    report_version: str | None = None  # its meta.versionId (If-Match), when the EHR gave one


@dataclass(frozen=True)
class Plan:
    """What changes at the EHR: `transaction` (radbridge's changed resources; None when
    nothing changed) and the EHR's DiagnosticReport with radbridge's Observations added:
    `report_update` (the whole resource, on `report_version`, the version read) or `patch`
    (JSON Patch, patch mode, sent after the transaction), None when its `result` already lists
    them all. `write_transaction` folds `report_update` into the transaction (one atomic
    request). `hashes` are recorded once everything was accepted."""

    transaction: Resource | None
    report_update: Resource | None
    patch: list[Resource] | None
    report_reference: str
    patient_reference: str
    hashes: dict[str, str]
    held: frozenset[str] = frozenset()  # `Flag/<id>` held until review (not sent)
    report_version: str | None = None  # the EHR report's version read (If-Match / ifMatch)


def _oid_or_uri(universal_id: str | None, universal_id_type: str | None) -> str | None:
    kind = (universal_id_type or "").upper()
    if universal_id and kind == "ISO":
        return universal_id if universal_id.startswith("urn:oid:") else f"urn:oid:{universal_id}"
    if universal_id and kind in ("URI", "URL"):
        return universal_id
    return None


def patient_system(identifier: PatientIdentifier, policy: IdentityPolicy) -> str | None:
    """The FHIR system of one patient identifier under the policy, or None (unusable)."""
    if identifier.system:
        return identifier.system
    system = _oid_or_uri(identifier.assigner_id, identifier.assigner_id_type)
    if system:
        return system
    if identifier.assigner or identifier.assigner_id:
        return policy.identifier_systems.get(identifier.assigner or "")
    return policy.patient_system


def _entity_system(
    entity: EntityIdentifier, policy: IdentityPolicy, facility: str | None
) -> str | None:
    if entity.system:
        return entity.system
    system = _oid_or_uri(entity.universal_id, entity.universal_id_type)
    if system:
        return system
    if entity.namespace and entity.namespace in policy.identifier_systems:
        return policy.identifier_systems[entity.namespace]
    if entity.namespace or entity.universal_id:
        return None
    return policy.accession_systems.get(facility or "")


def _patient_keys(report: Report, policy: IdentityPolicy) -> tuple[Key, ...]:
    keys = []
    for identifier in report.patient_identifiers:
        system = patient_system(identifier, policy)
        if system:
            keys.append(Key(system, identifier.value))
    return tuple(keys)


def _no_patient_key(report: Report) -> IdentityRefused:
    authorities = sorted({i.assigner for i in report.patient_identifiers if i.assigner})
    if not report.patient_identifiers:
        return IdentityRefused("the report names no patient identifier (PID-3 / Patient)")
    if authorities:
        return IdentityRefused(
            "no patient identifier has a system: map its assigning authority "
            f"({', '.join(authorities)}) in RADBRIDGE_IDENTIFIER_SYSTEMS"
            " or set RADBRIDGE_PATIENT_IDENTIFIER_SYSTEM for identifiers without one"
        )
    return IdentityRefused(
        "the patient identifier has no assigning authority and RADBRIDGE_PATIENT_IDENTIFIER_SYSTEM"
        " is not set: the report is not written back (no Patient without a system)"
    )


def identity(report: Report, policy: IdentityPolicy) -> Identity:
    """The report's Patient and DiagnosticReport at the EHR (IdentityRefused when the policy
    gives no identifier with a system)."""
    keys = _patient_keys(report, policy)
    patient_reference = report.subject_reference if report.source_format == "fhir" else None
    if patient_reference is None and not keys:
        raise _no_patient_key(report)
    if report.source_format == "fhir":
        with_system = [i for i in report.report_identifiers if i.system]
        report_key = Key(str(with_system[0].system), with_system[0].value) if with_system else None
        reference = (
            f"DiagnosticReport/{report.fhir_resource_id}" if report.fhir_resource_id else None
        )
        if reference is None and report_key is None:
            raise IdentityRefused(
                "the source DiagnosticReport has neither an id nor an identifier with a system"
            )
        sent: tuple[Resource, ...] = tuple(
            {
                "system": i.system,
                "value": i.value,
                **({"type": {"coding": [{"system": term.V2_0203, "code": i.type_code}]}} if i.type_code else {}),
            }
            for i in with_system
        )  # fmt: skip
        return Identity(patient_reference, keys[0] if keys else None, keys, reference,
                        report_key, sent)  # fmt: skip
    filler = report.filler_order
    if filler is None:
        raise IdentityRefused("OBR-3 (filler order number, the accession) is empty")
    system = _entity_system(filler, policy, report.sending_facility)
    if system is None:
        where = filler.namespace or report.sending_facility or "(none)"
        raise IdentityRefused(
            "the accession (OBR-3) has no identifier system: map its namespace or sending "
            f"facility ({where}) in RADBRIDGE_IDENTIFIER_SYSTEMS / RADBRIDGE_ACCESSION_SYSTEMS"
        )
    report_key = Key(system, filler.value)
    identifiers: list[Resource] = [report_key.identifier("ACSN")]
    placer = report.placer_order
    placer_system = _entity_system(placer, policy, None) if placer else None
    if placer is not None and placer_system:
        identifiers.append(Key(placer_system, placer.value).identifier("PLAC"))
    return Identity(None, keys[0], keys, None, report_key, tuple(identifiers))


def has_content(bundle: Resource) -> bool:
    """Whether a radbridge Bundle adds anything to the EHR (at least one Observation or
    insight: a report no template applies to may still hold a follow-up or a critical result)."""
    return any(e["resource"]["resourceType"] in _CONTENT for e in bundle.get("entry", []))


def _digest(resource: Resource, context: str) -> str:
    canonical = json.dumps(resource, sort_keys=True, ensure_ascii=False) + "\x00" + context
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _rewrite(value: Any, mapping: Mapping[str, str]) -> Any:
    """`value` with every `reference` named in `mapping` replaced."""
    if isinstance(value, dict):
        out = {k: _rewrite(v, mapping) for k, v in value.items()}
        reference = value.get("reference")
        if isinstance(reference, str) and reference in mapping:
            out["reference"] = mapping[reference]
        return out
    if isinstance(value, list):
        return [_rewrite(item, mapping) for item in value]
    return value


def is_review_provenance(resource: Resource) -> bool:
    """A clinician decision's Provenance (mappings.review), as opposed to the extraction's."""
    return resource.get("resourceType") == "Provenance" and "activity" in resource


def _entry(base_url: str, resource: Resource, request: Resource) -> Resource:
    return {
        "fullUrl": f"{base_url.rstrip('/')}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "request": request,
    }


def _merged_result(ehr_report: Resource, wanted: list[Resource]) -> list[Resource] | None:
    """The EHR report's `result` with radbridge's Observations added; None when all are there."""
    present = {
        str(r.get("reference", "")).split("/_history", 1)[0] for r in ehr_report.get("result", [])
    }
    missing = [r for r in wanted if r["reference"] not in present]
    if not missing:
        return None
    return [*ehr_report.get("result", []), *missing]


def plan(
    bundle: Resource,
    who: Identity,
    state: EhrState,
    policy: IdentityPolicy,
    delivered: Mapping[str, str],
    *,
    base_url: str,
    patch: bool = False,
    hold_flags: bool = False,
) -> Plan:
    """The write-back of one radbridge Bundle (see the module docstring); `hold_flags`
    (RADBRIDGE_FLAGS_HOLD_UNTIL_REVIEW): a Flag not accepted yet is held (`mappings.flag_hold`)."""
    internal_report = diagnostic_report_of(bundle) or {}
    internal_patient = next(
        (e["resource"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "Patient"),
        None,
    )  # fmt: skip
    entries: list[Resource] = []
    hashes: dict[str, str] = {}
    if state.patient is not None:
        patient_reference = state.patient
    else:
        if not policy.create_patient or who.patient_key is None:
            raise IdentityRefused("no Patient at the EHR matches the report's identifier")
        patient_uuid = deterministic_id("Patient", who.patient_key.system, who.patient_key.value)
        patient_reference = f"urn:uuid:{patient_uuid}"
        entries.append(
            {
                "fullUrl": patient_reference,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [key.identifier() for key in who.patient_identifiers],
                },
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": who.patient_key.query,
                },
            }
        )
    if state.report is not None:
        report_reference = f"DiagnosticReport/{state.report['id']}"
    elif who.report_reference is not None:
        report_reference = who.report_reference
    else:
        report_reference = f"DiagnosticReport/{internal_report.get('id')}"
    mapping = {f"DiagnosticReport/{internal_report.get('id')}": report_reference}
    if internal_patient is not None:
        mapping[f"Patient/{internal_patient['id']}"] = patient_reference
    context = f"{who.patient}\x00{who.report_reference or who.report_key}"
    resources = [e["resource"] for e in bundle.get("entry", [])]
    held = held_flags(resources, delivered) if hold_flags else frozenset()
    for resource in resources:
        kind = resource["resourceType"]
        if kind not in _OWN and not (kind == "Provenance" and not is_review_provenance(resource)):
            continue
        key = f"{kind}/{resource['id']}"
        if key in held:
            if key in delivered:  # sent before the setting was on: the EHR still holds it
                hashes[key] = delivered[key]
            continue
        if kind == "Provenance" and held:  # it names no Flag the EHR does not hold
            resource = without_targets(resource, {k for k in held if k not in delivered})
            if not resource["target"]:  # it named only held Flags: it waits for them
                continue
        digest = _digest(resource, context)
        hashes[key] = digest
        if delivered.get(key) == digest:
            continue
        outgoing = _rewrite(resource, mapping)
        entries.append(_entry(base_url, outgoing, {"method": "PUT", "url": key}))
    wanted = [{"reference": r["reference"]} for r in internal_report.get("result", [])]
    json_patch: list[Resource] | None = None
    report_update: Resource | None = None
    owned = state.report is not None and state.report.get("id") == internal_report.get("id")
    if state.report is not None and not owned:
        merged = _merged_result(state.report, wanted)
        if merged is not None and patch:
            json_patch = (
                [{"op": "add", "path": "/result/-", "value": r} for r in merged[len(state.report.get("result", [])):]]
                if state.report.get("result")
                else [{"op": "add", "path": "/result", "value": merged}]
            )  # fmt: skip
        elif merged is not None:
            report_update = {**copy.deepcopy(state.report), "result": merged}
    else:
        created = _rewrite(copy.deepcopy(internal_report), mapping)
        created["id"] = report_reference.split("/", 1)[1]
        if who.report_identifiers:
            created["identifier"] = [dict(i) for i in who.report_identifiers]
        else:
            created.pop("identifier", None)
        key = f"DiagnosticReport/{created['id']}"
        digest = _digest(created, context)
        hashes[key] = digest
        if owned and (delivered.get(key) != digest or _merged_result(state.report or {}, wanted)):
            report_update = created  # radbridge's own, already there: replaced (If-Match)
        elif not owned and delivered.get(key) != digest:
            entries.append(_entry(base_url, created, {"method": "PUT", "url": key}))
    only_patient = len(entries) == 1 and entries[0]["request"]["method"] == "POST"
    transaction = (
        None
        if not entries or only_patient
        else {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    )
    return Plan(transaction, report_update, json_patch, report_reference, patient_reference, hashes,
                held, state.report_version)  # fmt: skip


def write_transaction(written: Plan, *, base_url: str) -> Resource | None:
    """The transaction to POST (see the module docstring): `written.transaction` plus, when there
    is a `report_update` too, the EHR's DiagnosticReport as a `PUT` entry with `ifMatch` on the
    version read (none when the EHR gave no version). None without a transaction: a lone
    `report_update` goes as a plain PUT with `If-Match`."""
    if written.transaction is None or written.report_update is None:
        return written.transaction
    request: Resource = {"method": "PUT", "url": written.report_reference}
    if written.report_version:
        request["ifMatch"] = f'W/"{written.report_version}"'
    update = _entry(base_url, written.report_update, request)
    return {**written.transaction, "entry": [*written.transaction["entry"], update]}


def versions_from_response(response: Resource) -> dict[str, str]:
    """`Type/id` -> versionId from a transaction-response (etag, a `_history` location, or the
    returned resource's meta); entries without a version are left out."""
    found: dict[str, str] = {}
    for entry in response.get("entry", []) if isinstance(response, dict) else []:
        if not isinstance(entry, dict):
            continue
        answer = entry.get("response") or {}
        resource = entry.get("resource") or {}
        location = str(answer.get("location") or "")
        path = location.split("/fhir/")[-1] if "/fhir/" in location else location
        parts = [p for p in path.split("/") if p]
        key = None
        if len(parts) >= 2:
            key = (
                f"{parts[-4]}/{parts[-3]}"
                if "_history" in parts and len(parts) >= 4
                else f"{parts[-2]}/{parts[-1]}"
            )
        if resource.get("resourceType") and resource.get("id"):
            key = f"{resource['resourceType']}/{resource['id']}"
        version = None
        etag = str(answer.get("etag") or "")
        if etag:
            version = etag.removeprefix("W/").strip('"')
        elif "_history" in parts and parts.index("_history") + 1 < len(parts):
            version = parts[parts.index("_history") + 1]
        elif (resource.get("meta") or {}).get("versionId"):
            version = str(resource["meta"]["versionId"])
        if key and version:
            found[key] = version
    return found


def _targets_written(provenance: Resource) -> bool:
    """Whether a decision's Provenance targets only resources the write-back sends (`_OWN`:
    Observations and insights); one on anything else would dangle at the EHR."""
    targets = [str(t.get("reference", "")).split("/", 1)[0] for t in provenance.get("target", [])]
    return bool(targets) and all(kind in _OWN for kind in targets)


def review_transaction(
    bundle: Resource,
    written: Plan,
    versions: Mapping[str, str],
    policy: IdentityPolicy,
    delivered: Mapping[str, str],
    *,
    base_url: str,
) -> tuple[Resource | None, dict[str, str]]:
    """The decisions' Provenance not yet at the EHR, as a transaction (None: none), and their
    hashes. Targets carry the version the EHR returned for the Observation (else none); the
    reviewer is an identifier (or a conditionally created Practitioner); radbridge's own version
    numbers never leave it (the `revision` entity is left out)."""
    entries: list[Resource] = []
    hashes: dict[str, str] = {}
    reviewers: dict[str, str] = {}
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        if not is_review_provenance(resource) or not _targets_written(resource):
            continue
        if any(target in written.held for target in provenance_targets(resource)):
            continue  # a decision on a Flag held until review (a rejected one never sent)
        key = f"Provenance/{resource['id']}"
        digest = _digest(resource, written.report_reference)
        hashes[key] = digest
        if delivered.get(key) == digest:
            continue
        outgoing = copy.deepcopy(resource)
        targets = []
        for target in resource.get("target", []):
            plain = str(target.get("reference", "")).split("/_history", 1)[0]
            version = versions.get(plain)
            targets.append({"reference": f"{plain}/_history/{version}" if version else plain})
        outgoing["target"] = targets
        outgoing["entity"] = [
            {**e, "what": {"reference": written.report_reference}}
            for e in resource.get("entity", [])
            if e.get("role") == "source"
        ]
        if not outgoing["entity"]:
            del outgoing["entity"]
        agents = []
        for agent in resource.get("agent", []):
            who = dict(agent.get("who") or {})
            username = str(who.get("display") or "")
            if str(who.get("reference", "")).startswith("Practitioner/") and username:
                reviewer_key = Key(policy.reviewer_system, username)
                if policy.create_reviewer:
                    if username not in reviewers:
                        full_url = f"urn:uuid:{deterministic_id('Practitioner', policy.reviewer_system, username)}"
                        reviewers[username] = full_url
                        entries.append(
                            {
                                "fullUrl": full_url,
                                "resource": {
                                    "resourceType": "Practitioner",
                                    "identifier": [reviewer_key.identifier()],
                                },
                                "request": {
                                    "method": "POST",
                                    "url": "Practitioner",
                                    "ifNoneExist": reviewer_key.query,
                                },
                            }
                        )
                    who = {"reference": reviewers[username], "display": username}
                else:
                    who = {"identifier": reviewer_key.identifier(), "display": username}
            agents.append({**agent, "who": who})
        outgoing["agent"] = agents
        entries.append(_entry(base_url, outgoing, {"method": "PUT", "url": key}))
    if not any(e["resource"]["resourceType"] == "Provenance" for e in entries):
        return None, hashes
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, hashes
