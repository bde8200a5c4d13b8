"""The media types radbridge reads and writes (one table: HTTP headers, stored content types)."""

from __future__ import annotations

FHIR_JSON = "application/fhir+json"
"""FHIR R4 JSON: the API's bodies, the EHR's, a stored FHIR message's content type."""
JSON = "application/json"
HL7_ER7 = "x-application/hl7-v2+er7"
"""HL7v2 ER7 over HTTP (the API's /hl7v2 and its ACKs), a stored HTTP message's content type."""
HL7_V2 = "application/hl7-v2"
"""A stored message received over MLLP."""
FORM = "application/x-www-form-urlencoded"
"""A FHIR search sent as a form (POST …/_search)."""
PROMETHEUS_TEXT = "text/plain; version=0.0.4"
"""/metrics: the Prometheus text exposition format."""
FHIR_JSON_FORMATS = ("json", JSON, FHIR_JSON)
"""The `_format` values that ask for JSON."""
