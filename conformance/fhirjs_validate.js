// FHIR R4 validation with FHIR.js (the npm package `fhir`), run by conformance/validate.py.
//
// Usage: node fhirjs_validate.js MODULE_DIR < documents.json > messages.json
//   MODULE_DIR     the installed package folder (e.g. .venv/node/node_modules/fhir)
//   stdin          a JSON array of FHIR resources (Bundles or single resources)
//   stdout         a JSON object {"version": "<fhir package version>", "results": [...]}, one
//                  entry per input document: the FHIR.js messages
//                  [{location, resourceId, severity, message}] (severity fatal|error|warning|info)
// One process validates every document (FHIR.js loads its R4 profiles once). It works offline:
// the R4 StructureDefinitions and value sets ship inside the package. Exit 0 when it ran,
// 2 on unreadable input, 3 when the package cannot be loaded. Messages carry element paths and
// ids only; the input is never echoed.
"use strict";

const path = require("path");

const moduleDir = process.argv[2];
if (!moduleDir) {
  process.stderr.write("usage: node fhirjs_validate.js MODULE_DIR < documents.json\n");
  process.exit(2);
}

let Fhir;
let version = "unknown";
try {
  Fhir = require(path.resolve(moduleDir)).Fhir;
  version = require(path.join(path.resolve(moduleDir), "package.json")).version;
} catch (error) {
  process.stderr.write(`cannot load the fhir package from ${moduleDir}: ${error.message}\n`);
  process.exit(3);
}

const chunks = [];
process.stdin.on("data", (chunk) => chunks.push(chunk));
process.stdin.on("end", () => {
  let documents;
  try {
    documents = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch (error) {
    process.stderr.write("stdin is not JSON\n");
    process.exit(2);
  }
  if (!Array.isArray(documents)) {
    process.stderr.write("stdin must be a JSON array of resources\n");
    process.exit(2);
  }
  const fhir = new Fhir();
  const results = documents.map((document) => {
    try {
      // errorOnUnexpected: an element R4 does not define is an error, not a warning
      return fhir.validate(document, { errorOnUnexpected: true }).messages;
    } catch (error) {
      return [{ location: "", severity: "fatal", message: `FHIR.js failed: ${error.message}` }];
    }
  });
  process.stdout.write(JSON.stringify({ version, results }));
});
