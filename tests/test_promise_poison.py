"""Promise 4 (issue 14): a poison message ends `dead` with a reason after
RADBRIDGE_TASK_MAX_RETRIES while the other messages keep flowing.

Two poisons among 40 good messages, sent to a real `radbridge serve` (its supervised worker,
embedded Redis, SQLite, a real FHIR server as the EHR): one kills the worker process that parses
it, every time (as a native crash would: SIGKILL from inside the parse), one makes the parser
raise an exception no table lists (a parser bug). The fault is injected into the real worker at
start-up (`tests.promises.POISON`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers.fhir_server import EHR_IDENTITY_ENV, FhirServer
from tests.helpers.waiting import wait_for
from tests.promises import (
    FINDINGS,
    POISON,
    SERVE_DOWN,
    make_serve,
    msa,
    oru,
    send_mllp,
    sitecustomize_env,
)

pytestmark = pytest.mark.integration
GOOD = 40
MAX_RETRIES = 2


def test_poison_messages_go_dead_with_a_reason_while_others_flow(tmp_path: Path) -> None:
    ehr = FhirServer().start()
    serve = make_serve(
        tmp_path,
        {
            "RADBRIDGE_FHIR_BASE_URL": ehr.base_url,
            **EHR_IDENTITY_ENV,
            "RADBRIDGE_TASK_MAX_RETRIES": str(MAX_RETRIES),
            **sitecustomize_env(tmp_path / "site", POISON),
        },
    )
    payloads = [oru(f"PS{n:03d}", mrn=f"MRN-PS{n:03d}") for n in range(GOOD)]
    payloads.insert(3, oru("KILLER", lines=[*FINDINGS, "POISON-KILL"]))
    payloads.insert(8, oru("RAISER", lines=[*FINDINGS, "POISON-RAISE"]))
    poison_ids = {"KILLER": 4, "RAISER": 9}  # job ids: the order of arrival
    try:
        serve.start().ready()
        started = time.monotonic()
        acks = send_mllp(serve.mllp_port, payloads)
        assert [msa(a)[0] for a in acks] == ["CA"] * len(payloads)
        good_s = wait_for(
            lambda: serve.states().get("delivered", 0) == GOOD,
            180,
            "the good messages",
            interval=0.5,
            tolerate=SERVE_DOWN,
        )
        dead_s = wait_for(
            lambda: all(serve.job(i)["state"] == "dead" for i in poison_ids.values()),
            180,
            "the poisons to go dead",
            interval=0.5,
            tolerate=SERVE_DOWN,
        )
        jobs = {name: serve.job(i) for name, i in poison_ids.items()}
        total_s = time.monotonic() - started
    finally:
        serve.stop()
        ehr.stop()
    attempts = MAX_RETRIES + 1
    print(
        f"promise 4: {GOOD} good delivered {good_s:.1f} s after the last ACK, poisons dead "
        f"{dead_s:.1f} s later ({total_s:.1f} s in all): "
        + "; ".join(
            f"{n} {j['state']} attempts={j['attempts']} {j['reason']!r}" for n, j in jobs.items()
        )
    )
    assert jobs["KILLER"]["reason"] == f"worker lost after {attempts} attempts"
    assert jobs["RAISER"]["reason"] == f"InternalMappingError after {attempts} attempts"
    assert {j["attempts"] for j in jobs.values()} == {attempts}  # one counter, one truth
    assert ehr.transactions == GOOD  # nothing of the poisons reached the EHR
    log = serve.log()
    assert "internal error in parse_oru correlation=" in log  # the bug is logged with an id...
    assert "a parser bug" not in log  # ...never with the exception's text (it may hold PHI)
