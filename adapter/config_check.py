"""Every configuration problem at once: `radbridge check-config`, and `serve` / `worker` before
they start anything. Problems name the variable (and the path where one is involved), never a
secret's value.

Errors stop a start: invalid values, in production an unknown RADBRIDGE_* variable (a misspelt
setting is otherwise silently ignored), a weak API key or session secret, a missing API key, TLS
settings given half, a certificate, key, CA, model, users file or template folder that cannot be
used. Warnings are printed and the start goes on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from adapter.errors import ConfigError
from adapter.settings import Environment, Settings, load_settings, unknown_variables
from mappings.errors import TemplateError, TemplateProblems

Severity = Literal["error", "warning"]
MIN_SECRET_CHARS = 32
MIN_DISTINCT_CHARS = 10
_PLACEHOLDERS = ("changeme", "change-me", "secret", "password", "example", "radbridge", "xxxx")


@dataclass(frozen=True)
class ConfigProblem:
    """One problem: how bad, and what is wrong (naming the variable)."""

    severity: Severity
    message: str


def weak_secret(name: str, value: str) -> str | None:
    """Why a secret radbridge checks others with (API key, session secret) is too weak to guard
    patient data, or None. Never includes the value."""
    if len(value) < MIN_SECRET_CHARS:
        return (
            f"{name} is too short ({len(value)} characters; at least {MIN_SECRET_CHARS}, e.g. "
            "`openssl rand -hex 32`)"
        )
    if len(set(value)) < MIN_DISTINCT_CHARS:
        return f"{name} repeats too few characters to be random (e.g. `openssl rand -hex 32`)"
    if any(word in value.lower() for word in _PLACEHOLDERS):
        return f"{name} contains a placeholder word; use a random value (`openssl rand -hex 32`)"
    return None


def _readable(name: str, path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    if not path.exists():
        return f"{name}={path}: no such {what}"
    if what == "file" and not path.is_file():
        return f"{name}={path}: not a file"
    if what == "folder" and not path.is_dir():
        return f"{name}={path}: not a folder"
    if not os.access(path, os.R_OK):
        return f"{name}={path}: not readable (permissions)"
    return None


def _tls_problems(settings: Settings) -> list[str]:
    cert, key, ca = settings.mllp_tls_cert, settings.mllp_tls_key, settings.mllp_tls_client_ca
    if cert is None and key is None and ca is None:
        return []
    if (cert is None) != (key is None):
        given, missing = ("CERT", "KEY") if key is None else ("KEY", "CERT")
        return [
            f"RADBRIDGE_MLLP_TLS_{given} is set but RADBRIDGE_MLLP_TLS_{missing} is not: MLLP "
            "over TLS needs both (serve never falls back to plain MLLP)"
        ]
    if cert is None:
        return ["RADBRIDGE_MLLP_TLS_CLIENT_CA needs RADBRIDGE_MLLP_TLS_CERT and _KEY (mutual TLS)"]
    problems = [
        problem
        for name, path in (
            ("RADBRIDGE_MLLP_TLS_CERT", cert),
            ("RADBRIDGE_MLLP_TLS_KEY", key),
            ("RADBRIDGE_MLLP_TLS_CLIENT_CA", ca),
        )
        if (problem := _readable(name, path, "file")) is not None
    ]
    if not problems:
        try:
            settings.mllp_ssl_context()
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _secret_problems(settings: Settings) -> list[str]:
    problems = []
    for name, secret in (
        ("RADBRIDGE_API_KEY", settings.api_key),
        ("RADBRIDGE_UI_SESSION_SECRET", settings.ui_session_secret),
    ):
        value = secret.get_secret_value() if secret is not None else ""
        if value and (problem := weak_secret(name, value)) is not None:
            problems.append(problem)
    return problems


def _path_problems(settings: Settings) -> list[str]:
    checks: list[tuple[str, Path | None, str]] = [
        ("RADBRIDGE_MODEL_PATH", settings.model_path if settings.engine == "llamacpp" else None,
         "file"),
        ("RADBRIDGE_UI_USERS_FILE", settings.ui_users_file, "file"),
        ("RADBRIDGE_SMART_PRIVATE_KEY_PATH",
         settings.smart_private_key_path if settings.fhir_auth == "smart" else None, "file"),
        ("RADBRIDGE_TEMPLATES_DIR", settings.templates_dir, "folder"),
    ]  # fmt: skip
    problems = [
        problem
        for name, path, what in checks
        if (problem := _readable(name, path, what)) is not None
    ]
    if settings.fhir_auth == "bearer" and settings.fhir_bearer_token is None:
        problems.append("RADBRIDGE_FHIR_AUTH=bearer needs RADBRIDGE_FHIR_BEARER_TOKEN")
    if settings.fhir_auth == "smart":
        for name, value in (
            ("RADBRIDGE_SMART_TOKEN_URL", settings.smart_token_url),
            ("RADBRIDGE_SMART_CLIENT_ID", settings.smart_client_id),
            ("RADBRIDGE_SMART_PRIVATE_KEY_PATH", settings.smart_private_key_path),
        ):
            if not value:
                problems.append(f"RADBRIDGE_FHIR_AUTH=smart needs {name}")
    if settings.mllp_port == settings.http_port and settings.mllp_port != 0:
        problems.append(
            f"RADBRIDGE_MLLP_PORT and RADBRIDGE_HTTP_PORT are both {settings.http_port}"
        )
    return problems


def _template_problems(settings: Settings) -> list[str]:
    if settings.templates_dir is None or not settings.templates_dir.is_dir():
        return []
    from mappings.template import load_templates

    try:
        load_templates(settings.templates_dir)
    except TemplateProblems as exc:
        return [f"RADBRIDGE_TEMPLATES_DIR: {problem}" for problem in exc.problems]
    except TemplateError as exc:
        return [f"RADBRIDGE_TEMPLATES_DIR: {exc}"]
    return []


def check_config() -> tuple[Settings | None, list[ConfigProblem]]:
    """The settings of the environment (None when they cannot be built) and every problem."""
    environ: Mapping[str, str] = os.environ
    production = environ.get("RADBRIDGE_ENV", "").strip().lower() == Environment.PRODUCTION
    problems = [
        ConfigProblem(
            "error" if production else "warning",
            warning.removeprefix("unknown setting ").replace("is ignored", "is not a setting")
            if production
            else warning,
        )
        for warning in unknown_variables(environ)
    ]
    try:
        settings = load_settings()
    except ConfigError as exc:
        problems += [ConfigProblem("error", problem) for problem in exc.problems]
        return None, problems
    problems += [ConfigProblem(severity, text) for severity, text in settings.production_problems()]
    severity: Severity = "error" if settings.env is Environment.PRODUCTION else "warning"
    problems += [ConfigProblem(severity, text) for text in _secret_problems(settings)]
    if settings.env is Environment.PRODUCTION and hasattr(os, "geteuid") and os.geteuid() == 0:
        problems.append(
            ConfigProblem("warning", "running as root: a service account is safer (docs/deploy.md)")
        )
    errors = _tls_problems(settings) + _path_problems(settings) + _template_problems(settings)
    try:
        settings.mllp_allow_networks()
    except ConfigError as exc:
        errors.append(str(exc))
    problems += [ConfigProblem("error", text) for text in errors]
    return settings, problems
