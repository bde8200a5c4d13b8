"""`radbridge replay`: send a folder of fixtures to a running radbridge and compare with goldens.

Each fixture file in DIR (raw HL7v2, MLLP-framed bytes, the scout `.log` wrapper — one message
per frame — or FHIR JSON) is sent as it is:

- HL7v2 frames over MLLP (`--to mllp://HOST:PORT`, with `adapter.mllp.MllpClient`) or as
  `POST /hl7v2` (`--to http://HOST:PORT`); the ACK of each frame is recorded;
- FHIR JSON always over HTTP (the API at `--api`, default the `--to` URL or
  `http://HOST:RADBRIDGE_HTTP_PORT`): a DiagnosticReport to `POST /fhir/DiagnosticReport`,
  anything else to `POST /fhir`; the status, Location and OperationOutcome are recorded.

Then replay waits until the service is idle: `GET /metrics` shows no message `accepted`,
`processing` or `failed` (retrying) — so replay expects a test instance, not one that takes live
traffic — or `--timeout` seconds pass. It reads each fixture with the service's own readers
(`adapter.inputs`), routes it with the built-in templates as the worker does
(`workers.process.route`), computes the UUIDv5 ids the service gives the report's resources
(`mappings.fhir_out.diagnostic_report_id`, `provenance_id`) and pulls them:
`GET /fhir/DiagnosticReport/{id}`, `GET /fhir/Observation?_id=…` (its results),
`GET /fhir/Provenance/{id}` per template, and the Patient and Device they reference.

Goldens beside each fixture: `NAME.ack` (the ACKs, or the HTTP answer for FHIR) and
`NAME.fhir.json` (the pulled resources per report id, plus the frames the readers reject);
volatile fields are normalised (`conformance.golden`). `--update-golden` writes them; a golden
is only evidence after a person has read it. The API key comes from RADBRIDGE_API_KEY
(`X-API-Key`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from rich.table import Table

from conformance.errors import ConformanceError
from conformance.golden import (
    canonical_json,
    normalise_ack,
    normalise_http_answer,
    normalise_resource,
    unified_diff,
)
from conformance.junit import CaseResult
from mappings.media_types import FHIR_JSON, HL7_ER7

ACK_SUFFIX = ".ack"
FHIR_SUFFIX = ".fhir.json"
FIXTURE_SUFFIXES = frozenset({".hl7", ".er7", ".txt", ".log", ".mllp", ".json"})
PENDING_STATES = ("accepted", "processing", "failed")
POLL_SECONDS = 0.5
_METRIC = re.compile(r'^radbridge_messages\{state="(?P<state>[a-z_]+)"\}\s+(?P<count>\d+)', re.M)

Kind = Literal["hl7v2", "fhir"]


class ReplayError(ConformanceError):
    """Replay cannot run: a bad target, an empty folder, or the service cannot be reached."""


@dataclass(frozen=True)
class Target:
    """Where HL7v2 goes: `mllp://host:port` or `http(s)://host:port[/base]`."""

    scheme: Literal["mllp", "http"]
    host: str
    port: int
    url: str

    @property
    def label(self) -> str:
        """`mllp` or `http`, for the summary."""
        return self.scheme


def parse_target(url: str) -> Target:
    """Parse `--to`; ReplayError when it is neither mllp:// nor http(s):// with a host."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ReplayError(f"--to {url}: the port is not a number") from None
    if parts.scheme == "mllp":
        if not parts.hostname or port is None:
            raise ReplayError(f"--to {url}: use mllp://HOST:PORT")
        return Target("mllp", parts.hostname, port, url)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ReplayError(f"--to {url}: use http://HOST:PORT")
        default = 443 if parts.scheme == "https" else 80
        return Target("http", parts.hostname, port or default, url.rstrip("/"))
    raise ReplayError(f"--to {url}: the scheme must be mllp:// or http://")


def api_base(target: Target, api: str | None, http_port: int) -> str:
    """The HTTP API to post FHIR to and pull results from."""
    if api:
        parts = urlsplit(api)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ReplayError(f"--api {api}: use http://HOST:PORT")
        return api.rstrip("/")
    if target.scheme == "http":
        return target.url
    return f"http://{target.host}:{http_port}"


@dataclass(frozen=True)
class Fixture:
    """One fixture file and its golden files."""

    path: Path
    kind: Kind

    @property
    def name(self) -> str:
        """The file name without its last suffix (the goldens' stem)."""
        return self.path.stem

    @property
    def ack_golden(self) -> Path:
        """NAME.ack."""
        return self.path.with_name(self.name + ACK_SUFFIX)

    @property
    def fhir_golden(self) -> Path:
        """NAME.fhir.json."""
        return self.path.with_name(self.name + FHIR_SUFFIX)


def _is_golden(path: Path) -> bool:
    return path.name.endswith((ACK_SUFFIX, FHIR_SUFFIX))


def find_fixtures(directory: Path) -> list[Fixture]:
    """The fixtures in `directory` (sorted; goldens, hidden files and other suffixes skipped)."""
    if not directory.is_dir():
        raise ReplayError(f"{directory}: not a folder")
    fixtures = []
    for path in sorted(directory.iterdir()):
        if (
            not path.is_file()
            or path.name.startswith((".", "_"))
            or _is_golden(path)
            or path.suffix.lower() not in FIXTURE_SUFFIXES
        ):
            continue
        data = path.read_bytes()
        kind: Kind = "fhir" if data.lstrip()[:1] in (b"{", b"[") else "hl7v2"
        fixtures.append(Fixture(path, kind))
    names = [f.name for f in fixtures]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ReplayError(f"{directory}: fixtures share a golden name: {', '.join(clash)}")
    return fixtures


@dataclass(frozen=True)
class ReplayOptions:
    """What `radbridge replay` was asked to do."""

    directory: Path
    target: Target
    api: str
    api_key: str | None = None
    timeout: float = 120.0
    update_golden: bool = False
    default_charset: str = "utf-8"
    default_language: str = "en"


@dataclass
class Sent:
    """What the service answered to one fixture."""

    fixture: Fixture
    ack: str = ""
    error: str | None = None
    seconds: float = 0.0


@dataclass
class ReplayResult:
    """Every check, the diffs of the failed ones and whether the service went idle."""

    cases: list[CaseResult] = field(default_factory=list)
    diffs: list[tuple[str, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    pending_at_end: int = 0

    @property
    def ok(self) -> bool:
        """True when every check passed (or was written with --update-golden)."""
        return all(c.outcome in ("passed", "skipped") for c in self.cases)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


async def _send_hl7v2(
    fixture: Fixture,
    options: ReplayOptions,
    mllp: Any,
    http: httpx.AsyncClient,
) -> str:
    from adapter.mllp import MllpError
    from mappings.framing import split_frames

    frames = split_frames(fixture.path.read_bytes())
    if not frames:
        raise ReplayError("no HL7v2 message or frame in the file")
    texts = []
    for frame in frames:
        ack: bytes | None
        if options.target.scheme == "mllp":
            try:
                ack = await mllp.send(frame.payload)
            except MllpError:
                await mllp.close()  # a late ACK must not be taken for the next message's
                ack = None
        else:
            response = await http.post(
                f"{options.target.url}/hl7v2",
                content=frame.payload,
                headers={"Content-Type": HL7_ER7},
            )
            if response.status_code == 204:
                ack = None
            elif response.content.startswith(b"MSH"):
                ack = response.content
            else:  # not an ACK: auth, size limit, server error (an OperationOutcome)
                raise ReplayError(f"POST /hl7v2 answered HTTP {response.status_code}")
        texts.append(f"# frame {frame.index}\n{normalise_ack(ack)}")
    return "".join(texts)


async def _send_fhir(fixture: Fixture, options: ReplayOptions, http: httpx.AsyncClient) -> str:
    import json

    data = fixture.path.read_bytes()
    try:
        resource_type = json.loads(data).get("resourceType")
    except (ValueError, AttributeError):
        resource_type = None
    path = "/fhir/DiagnosticReport" if resource_type == "DiagnosticReport" else "/fhir"
    response = await http.post(
        f"{options.api}{path}", content=data, headers={"Content-Type": FHIR_JSON}
    )
    if response.status_code in (401, 403, 404, 405) or response.status_code >= 500:
        raise ReplayError(f"POST {path} answered HTTP {response.status_code}")
    return normalise_http_answer(
        response.status_code, response.content, response.headers.get("location")
    )


async def send_all(
    fixtures: list[Fixture], options: ReplayOptions, advance: Callable[[Sent], None]
) -> list[Sent]:
    """Send every fixture in order over one MLLP connection / one HTTP client."""
    from adapter.mllp import MllpClient

    mllp = MllpClient(options.target.host, options.target.port, timeout=options.timeout)
    results = []
    async with httpx.AsyncClient(
        headers=_headers(options.api_key), timeout=options.timeout
    ) as http:
        try:
            for fixture in fixtures:
                sent = Sent(fixture)
                started = time.perf_counter()
                try:
                    if fixture.kind == "fhir":
                        sent.ack = await _send_fhir(fixture, options, http)
                    else:
                        sent.ack = await _send_hl7v2(fixture, options, mllp, http)
                except (ReplayError, httpx.HTTPError, OSError) as exc:
                    sent.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                sent.seconds = time.perf_counter() - started
                results.append(sent)
                advance(sent)
        finally:
            await mllp.close()
    return results


def pending_messages(client: httpx.Client, api: str) -> int:
    """Messages the service has accepted but not finished (from GET /metrics)."""
    response = client.get(f"{api}/metrics")
    response.raise_for_status()
    counts = {m["state"]: int(m["count"]) for m in _METRIC.finditer(response.text)}
    return sum(counts.get(state, 0) for state in PENDING_STATES)


def wait_until_idle(
    client: httpx.Client, api: str, timeout: float, tick: Callable[[int], None]
) -> int:
    """Poll until no message is pending or `timeout` passes; returns the pending count."""
    deadline = time.monotonic() + timeout
    while True:
        pending = pending_messages(client, api)
        tick(pending)
        if pending == 0 or time.monotonic() >= deadline:
            return pending
        time.sleep(POLL_SECONDS)


def _get(client: httpx.Client, url: str) -> dict[str, Any] | None:
    response = client.get(url)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _results(client: httpx.Client, api: str, report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The served Observations a DiagnosticReport lists in `result` (`_id` searches of 100
    ids: retired ones are left out, as searches do)."""
    ids = [
        str(r.get("reference", "")).removeprefix("Observation/")
        for r in (report or {}).get("result", [])
    ]
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), 100):
        chunk = ",".join(ids[start : start + 100])
        page = _get(client, f"{api}/fhir/Observation?_id={chunk}&_count=1000") or {}
        found += [
            e["resource"]
            for e in page.get("entry", [])
            if (e.get("search") or {}).get("mode") == "match"
        ]
    return found


def _sort_key(resource: dict[str, Any]) -> tuple[str, str, str]:
    return (
        str((resource.get("code") or {}).get("text", "")),
        str((resource.get("bodySite") or {}).get("text", "")),
        str(resource.get("id", "")),
    )


def _reference_ids(resources: list[dict[str, Any]], key: str, kind: str) -> list[str]:
    ids = set()
    for resource in resources:
        reference = str((resource.get(key) or {}).get("reference", ""))
        if reference.startswith(f"{kind}/"):
            ids.add(reference.split("/", 1)[1])
    return sorted(ids)


def pull_results(client: httpx.Client, fixture: Fixture, options: ReplayOptions) -> dict[str, Any]:
    """What the service holds for the fixture's reports (normalised, golden structure)."""
    from adapter.inputs import read_file
    from mappings.fhir_out import diagnostic_report_id, provenance_id
    from mappings.template import load_builtin_templates
    from workers.process import route

    api = options.api
    sourced, rejections = read_file(
        fixture.path,
        default_charset=options.default_charset,
        default_language=options.default_language,
    )
    templates = list(load_builtin_templates().values())
    reports: dict[str, Any] = {}
    for item in sourced:
        report = item.report
        report_id = diagnostic_report_id(report)
        routing = route(report, templates)  # the worker's routing (workers.process)
        chosen = [t for t in templates if t in routing.chosen]
        diagnostic_report = _get(client, f"{api}/fhir/DiagnosticReport/{report_id}")
        observations = sorted(_results(client, api, diagnostic_report), key=_sort_key)
        provenances = [
            p
            for t in chosen
            if (
                p := _get(
                    client,
                    f"{api}/fhir/Provenance/{provenance_id(report, t.id, t.version)}",
                )
            )
            is not None
        ]
        related = [r for r in [diagnostic_report, *observations] if r is not None]
        patients = [
            p
            for pid in _reference_ids(related, "subject", "Patient")
            if (p := _get(client, f"{api}/fhir/Patient/{pid}")) is not None
        ]
        devices = [
            d
            for did in _reference_ids(observations, "device", "Device")
            if (d := _get(client, f"{api}/fhir/Device/{did}")) is not None
        ]
        reports[report.report_id] = {
            "templates": [t.id for t in chosen],
            "DiagnosticReport": normalise_resource(diagnostic_report)
            if diagnostic_report
            else None,
            "Observation": [normalise_resource(o) for o in observations],
            "Provenance": [normalise_resource(p) for p in provenances],
            "Patient": [normalise_resource(p) for p in patients],
            "Device": [normalise_resource(d) for d in devices],
        }
    return {
        "reports": reports,
        "rejected": [{"frame": r.frame, "reason": r.reason} for r in rejections],
    }


def _check(
    name: str, classname: str, golden: Path, actual: str, options: ReplayOptions, seconds: float
) -> tuple[CaseResult, str | None, Path | None]:
    """(case, diff or None, written path or None) for one golden comparison."""
    if options.update_golden:
        golden.write_text(actual, encoding="utf-8")
        return CaseResult(name, classname, "passed", seconds, "golden written"), None, golden
    if not golden.is_file():
        message = f"no golden file {golden.name} (run with --update-golden, then review it)"
        return CaseResult(name, classname, "failed", seconds, message), None, None
    expected = golden.read_text(encoding="utf-8")
    if expected == actual:
        return CaseResult(name, classname, "passed", seconds), None, None
    diff = unified_diff(expected, actual, golden.name)
    return CaseResult(name, classname, "failed", seconds, "differs from golden", diff), diff, None


def run_replay(
    options: ReplayOptions,
    *,
    on_sent: Callable[[Sent], None] = lambda _: None,
    on_wait: Callable[[int], None] = lambda _: None,
    on_compared: Callable[[Fixture], None] = lambda _: None,
) -> ReplayResult:
    """Send, wait, pull and compare every fixture of `options.directory`."""
    fixtures = find_fixtures(options.directory)
    if not fixtures:
        raise ReplayError(
            f"{options.directory}: no fixtures (.hl7, .er7, .txt, .log, .mllp, .json)"
        )
    result = ReplayResult()
    with httpx.Client(headers=_headers(options.api_key), timeout=options.timeout) as client:
        try:
            ready = client.get(f"{options.api}/readyz")
        except httpx.HTTPError as exc:
            raise ReplayError(
                f"{options.api}: cannot reach the API ({type(exc).__name__})"
            ) from None
        if ready.status_code != 200:
            raise ReplayError(f"{options.api}/readyz answered HTTP {ready.status_code}")
        sent = asyncio.run(send_all(fixtures, options, on_sent))
        result.pending_at_end = wait_until_idle(client, options.api, options.timeout, on_wait)
        for item in sent:
            transport = "http" if item.fixture.kind == "fhir" else options.target.label
            classname = f"replay.{item.fixture.kind}.{transport}"
            name = item.fixture.name
            if item.error is not None:
                for check in ("ack", "fhir"):
                    result.cases.append(
                        CaseResult(f"{name}.{check}", classname, "error", item.seconds, item.error)
                    )
                on_compared(item.fixture)
                continue
            case, diff, written = _check(
                f"{name}.ack", classname, item.fixture.ack_golden, item.ack, options, item.seconds
            )
            result.cases.append(case)
            result.diffs += [(item.fixture.ack_golden.name, diff)] if diff else []
            result.written += [written] if written else []
            if result.pending_at_end:
                message = (
                    f"timeout: {result.pending_at_end} message(s) still pending after "
                    f"{options.timeout:g} s"
                )
                result.cases.append(CaseResult(f"{name}.fhir", classname, "error", 0.0, message))
                on_compared(item.fixture)
                continue
            started = time.perf_counter()
            try:
                actual = canonical_json(pull_results(client, item.fixture, options))
            except httpx.HTTPError as exc:
                message = f"pulling results failed: {type(exc).__name__}"
                result.cases.append(CaseResult(f"{name}.fhir", classname, "error", 0.0, message))
                on_compared(item.fixture)
                continue
            case, diff, written = _check(
                f"{name}.fhir",
                classname,
                item.fixture.fhir_golden,
                actual,
                options,
                time.perf_counter() - started,
            )
            result.cases.append(case)
            result.diffs += [(item.fixture.fhir_golden.name, diff)] if diff else []
            result.written += [written] if written else []
            on_compared(item.fixture)
    return result


def summary_table(result: ReplayResult) -> Table:
    """The closing table: one row per check, then the counts."""
    table = Table(title="radbridge replay")
    for column in ("check", "transport", "outcome", "detail"):
        table.add_column(column)
    colours = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}
    for case in result.cases:
        table.add_row(
            case.name,
            case.classname.rsplit(".", 1)[-1],
            f"[{colours[case.outcome]}]{case.outcome}[/]",
            case.message,
        )
    counts = {o: sum(1 for c in result.cases if c.outcome == o) for o in colours}
    table.caption = (
        f"{len(result.cases)} checks: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['error']} errors"
    )
    return table
