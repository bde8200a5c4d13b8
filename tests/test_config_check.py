"""Configuration that fails fast (issue 23 item 2): `radbridge check-config`, and serve before it
starts, list every problem at once with the variables (and paths) named and never a secret; in
production an unknown RADBRIDGE_* variable, a weak secret and TLS given half are errors; /metrics,
/docs and /openapi.json follow the API key in production; /docs works offline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapter.api import create_app
from adapter.config_check import check_config, weak_secret
from adapter.settings import Settings
from adapter.store import Store
from tests.serve_process import free_port, running_serve

CLI = [sys.executable, "-c", "from app.cli import main; main()"]
STRONG = "4f9c2a7e1b8d3f6a0c5e9b2d7a4f1c8e"  # 32 random hex characters
CANARY = "secret-canary-0815"


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADBRIDGE_")}
    return {**env, **settings}


def run(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def production(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {
        "RADBRIDGE_ENV": "production",
        "RADBRIDGE_API_KEY": STRONG,
        "RADBRIDGE_DATA_DIR": str(tmp_path / "data"),
    }
    return clean_env(**{**base, **extra})


def test_check_config_lists_every_problem_at_once(tmp_path: Path) -> None:
    key = tmp_path / "mllp.key"
    key.write_text("not a key", "utf-8")
    env = production(
        tmp_path,
        RADBRIDGE_API_KEY=CANARY,  # too short
        RADBRIDGE_MLLP_TLS_CRT="/etc/radbridge/mllp.pem",  # misspelt: TLS given half
        RADBRIDGE_MLLP_TLS_KEY=str(key),
        RADBRIDGE_MLLP_PORT="99999",
        RADBRIDGE_UI_USERS_FILE=str(tmp_path / "nowhere" / "users"),
        RADBRIDGE_UI_SESSION_SECRET="x",
        RADBRIDGE_TEMPLATES_DIR=str(tmp_path / "no-templates"),
    )
    done = run(["check-config"], env)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if line.startswith("error\t")]
    text = "\n".join(errors)
    assert "RADBRIDGE_MLLP_TLS_CRT is not a setting; did you mean RADBRIDGE_MLLP_TLS_CERT?" in text
    assert "RADBRIDGE_MLLP_PORT" in text
    # an invalid value stops the settings from being built: fix it and the rest shows
    env["RADBRIDGE_MLLP_PORT"] = "2575"
    done = run(["check-config"], env)
    assert done.returncode == 2
    text = done.stdout
    for expected in (
        "RADBRIDGE_MLLP_TLS_CRT is not a setting",
        "RADBRIDGE_MLLP_TLS_KEY is set but RADBRIDGE_MLLP_TLS_CERT is not",
        "RADBRIDGE_API_KEY is too short (18 characters",
        "RADBRIDGE_UI_SESSION_SECRET is too short",
        f"RADBRIDGE_UI_USERS_FILE={tmp_path / 'nowhere' / 'users'}: no such file",
        f"RADBRIDGE_TEMPLATES_DIR={tmp_path / 'no-templates'}: no such folder",
    ):
        assert expected in text, (expected, text)
    assert CANARY not in done.stdout + done.stderr
    assert "production: 6 error(s)" in done.stderr, done.stderr


def test_a_wrong_certificate_path_is_named(tmp_path: Path) -> None:
    env = production(
        tmp_path,
        RADBRIDGE_MLLP_TLS_CERT=str(tmp_path / "missing.pem"),
        RADBRIDGE_MLLP_TLS_KEY=str(tmp_path / "missing.key"),
    )
    done = run(["check-config"], env)
    assert done.returncode == 2
    assert f"RADBRIDGE_MLLP_TLS_CERT={tmp_path / 'missing.pem'}: no such file" in done.stdout
    assert f"RADBRIDGE_MLLP_TLS_KEY={tmp_path / 'missing.key'}: no such file" in done.stdout


def test_development_only_warns(tmp_path: Path) -> None:
    env = clean_env(RADBRIDGE_MLLP_PROT="2575", RADBRIDGE_API_KEY="short")
    done = run(["check-config"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning\tunknown setting RADBRIDGE_MLLP_PROT is ignored" in done.stdout
    assert "warning\tRADBRIDGE_API_KEY is too short" in done.stdout
    assert "development: 0 error(s), 2 warning(s)" in done.stderr


def test_serve_in_production_refuses_a_misspelt_tls_setting_before_starting(
    tmp_path: Path,
) -> None:
    """The issue's case: RADBRIDGE_MLLP_TLS_CRT misspelt only warned and serve started without
    TLS. Now serve lists every problem and starts nothing (no port bound, no data dir used)."""
    http_port = free_port()
    env = production(
        tmp_path,
        RADBRIDGE_MLLP_TLS_CRT=str(tmp_path / "mllp.pem"),
        RADBRIDGE_MLLP_TLS_KEY=str(tmp_path / "mllp.key"),
        RADBRIDGE_HTTP_PORT=str(http_port),
        RADBRIDGE_MLLP_PORT=str(free_port()),
    )
    started = time.monotonic()
    done = run(["serve"], env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "RADBRIDGE_MLLP_TLS_CRT is not a setting" in done.stderr
    assert "RADBRIDGE_MLLP_TLS_KEY is set but RADBRIDGE_MLLP_TLS_CERT is not" in done.stderr
    assert "not started" in done.stderr and "radbridge serving" not in done.stdout
    assert not (tmp_path / "data").exists()
    assert time.monotonic() - started < 120


def test_weak_secrets() -> None:
    assert weak_secret("K", STRONG) is None
    assert "too short" in (weak_secret("K", "x") or "")
    assert "repeats too few" in (weak_secret("K", "ab" * 20) or "")
    assert "placeholder" in (weak_secret("K", "changeme-" + STRONG) or "")


def test_check_config_reports_template_folder_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    builtin = Path(__file__).resolve().parents[1] / "mappings" / "templates" / "chest_ct.yaml"
    (folder / "copy.yaml").write_text(builtin.read_text("utf-8"), "utf-8")
    monkeypatch.setenv("RADBRIDGE_TEMPLATES_DIR", str(folder))
    settings, problems = check_config()
    assert settings is not None
    assert [p.message for p in problems if p.severity == "error"] == [
        f"RADBRIDGE_TEMPLATES_DIR: {folder.resolve() / 'copy.yaml'}: id: template id "
        "'chest_ct' is a built-in template's id"
    ]


def test_operator_endpoints_follow_the_key_in_production(tmp_path: Path) -> None:
    for env, guarded in (("development", False), ("production", True)):
        settings = Settings(env=env, api_key=STRONG, data_dir=tmp_path / env)
        store = Store.open(settings)
        client = TestClient(create_app(settings, store))
        for path in ("/metrics", "/docs", "/openapi.json", "/docs/assets/swagger-ui.css"):
            answer = client.get(path)
            assert (answer.status_code == 401) is guarded, (env, path, answer.status_code)
            assert client.get(path, headers={"X-API-Key": STRONG}).status_code == 200, path
        assert client.get("/healthz").status_code == 200  # orchestrators need no key
        store.close()


def test_docs_work_offline(tmp_path: Path) -> None:
    """Swagger UI's files come from the installed swagger-ui-dist package, never a CDN."""
    settings = Settings(data_dir=tmp_path)
    store = Store.open(settings)
    client = TestClient(create_app(settings, store))
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in page.text and "/openapi.json" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 1_000_000
    assert client.get("/docs/assets/other.js").status_code == 404
    assert client.get("/redoc").status_code == 404  # redoc would need a CDN
    assert client.get("/openapi.json").json()["info"]["title"] == "radbridge"
    store.close()


def test_serve_prints_one_line_and_stays_quiet(tmp_path: Path) -> None:
    """No Celery banner, no multi-line root warning, no INFO lines: one `serving` line."""
    with running_serve(tmp_path, {}) as service:
        time.sleep(2)  # the worker's start-up would have logged by now
        output = service.log.read_text()
    lines = [line for line in output.splitlines() if line.strip()]
    serving = [line for line in lines if line.startswith("radbridge serving:")]
    assert len(serving) == 1, output
    assert "celery@" not in output and "SecurityWarning" not in output
    assert not [line for line in lines if " INFO " in line], output
