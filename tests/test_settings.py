"""Settings are a public contract: every one is documented in the README, bad values are clear."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.errors import ConfigError
from adapter.settings import Settings, load_settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text("utf-8")
    missing = [name for name in Settings.model_fields if f"`RADBRIDGE_{name.upper()}`" not in text]
    assert missing == []


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings()
    assert (settings.host, settings.mllp_port, settings.http_port) == ("127.0.0.1", 2575, 8080)
    assert str(settings.data_dir) == ".radbridge" and settings.env.value == "development"


def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADBRIDGE_MLLP_PORT", "99999")
    with pytest.raises(ConfigError, match="RADBRIDGE_MLLP_PORT"):
        load_settings()


def test_production_needs_an_api_key_and_warns_on_embedded_parts() -> None:
    with pytest.raises(ConfigError, match="RADBRIDGE_API_KEY"):
        Settings(env="production").check_production()  # type: ignore[arg-type]
    warnings = Settings(env="production", api_key="x").check_production()  # type: ignore[arg-type]
    assert any("SQLite" in w for w in warnings) and any("Redis" in w for w in warnings)
