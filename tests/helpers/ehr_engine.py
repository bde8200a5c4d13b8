"""The third-party FHIR EHR of the contract tests: Medplum's FHIR router (tests/helpers/medplum_ehr.mjs)
in a Node process. `make venv` installs its npm packages into .venv/node (Makefile
MEDPLUM_VERSION); without node or those packages the tests that need it skip with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_PREFIX = ROOT / ".venv" / "node"
SERVER = Path(__file__).with_name("medplum_ehr.mjs")


def missing() -> str | None:
    """Why the engine cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (the Medplum FHIR engine runs on Node.js)"
    if not (NODE_PREFIX / "node_modules" / "@medplum" / "fhir-router").is_dir():
        return f"@medplum/fhir-router is not installed in {NODE_PREFIX} (make venv installs it)"
    return None


class MedplumEhr:
    """A running engine: `base_url`, FHIR calls, and the test hooks of medplum_ehr.mjs."""

    def __init__(self) -> None:
        env = {**os.environ, "MEDPLUM_PREFIX": str(NODE_PREFIX)}
        self.process = subprocess.Popen(
            ["node", str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the definitions load first (a few seconds)
        self.root = f"http://127.0.0.1:{json.loads(line)['port']}"
        self.base_url = f"{self.root}/fhir"
        self.http = httpx.Client(timeout=60)

    def put(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Write a resource as the EHR's own (what it held before radbridge)."""
        url = f"{self.base_url}/{resource['resourceType']}/{resource['id']}"
        response = self.http.put(url, json=resource)
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        return body

    def post(self, resource: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"{self.base_url}/{resource['resourceType']}", json=resource)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, path: str) -> httpx.Response:
        return self.http.get(f"{self.base_url}/{path}")

    def resources(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every current resource (of `kind`)."""
        found: list[dict[str, Any]] = self.http.get(f"{self.root}/control/resources").json()
        return [r for r in found if kind is None or r["resourceType"] == kind]

    def fail(self, status: int, *, count: int = 1, method: str | None = None) -> None:
        """Answer the next `count` requests (of `method`) with `status`."""
        spec = {"status": status, "count": count, "method": method}
        assert self.http.post(f"{self.root}/control/fail", json=spec).status_code == 204

    def dangling(self) -> list[str]:
        """Every literal reference in every resource that does not resolve at the EHR
        (`Type/id` or `Type/id/_history/vid`; an in-memory engine enforces no integrity)."""
        found = []
        for resource in self.resources():
            for reference in _references(resource):
                if reference.startswith("#"):
                    continue
                response = self.get(reference)
                if response.status_code != 200:
                    where = f"{resource['resourceType']}/{resource['id']}"
                    found.append(f"{where} -> {reference} ({response.status_code})")
        return found

    def stop(self) -> None:
        self.http.close()
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            yield reference
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


@pytest.fixture
def medplum() -> Iterator[MedplumEhr]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    engine = MedplumEhr()
    try:
        yield engine
    finally:
        engine.stop()
