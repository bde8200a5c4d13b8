"""Settings are a public contract: every one is documented in the README, bad values are clear."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapter.errors import ConfigError
from adapter.settings import Settings, load_settings, unknown_variables

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
        Settings(env="production").check_production()
    warnings = Settings(env="production", api_key="x").check_production()
    assert any("SQLite" in w for w in warnings) and any("Redis" in w for w in warnings)


def test_unknown_variables_are_named_with_the_closest_setting_never_the_value() -> None:
    warnings = unknown_variables(
        {
            "RADBRIDGE_MLLP_PROT": "secret-canary",
            "RADBRIDGE_DATADIR": "/srv/radbridge",
            "RADBRIDGE_QWERTYUIOP": "x",
            "RADBRIDGE_MLLP_PORT": "2575",
            "RADBRIDGE_TEST_REDIS_URL": "redis://",
            "HOME": "/root",
        }
    )
    assert warnings == [
        "unknown setting RADBRIDGE_DATADIR is ignored; did you mean RADBRIDGE_DATA_DIR?",
        "unknown setting RADBRIDGE_MLLP_PROT is ignored; did you mean RADBRIDGE_MLLP_PORT?",
        "unknown setting RADBRIDGE_QWERTYUIOP is ignored",
    ]


def test_every_command_warns_once_on_a_misspelt_setting() -> None:
    """A real `radbridge templates list` process: the warning names the variable and the
    closest setting, never its value."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADBRIDGE_")}
    env["RADBRIDGE_MLLP_PROT"] = "secret-canary-4711"
    done = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "templates", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert output.count("unknown setting RADBRIDGE_MLLP_PROT") == 1
    assert "did you mean RADBRIDGE_MLLP_PORT?" in output and "secret-canary" not in output


def test_mllp_allow_list_parses_and_names_a_bad_entry() -> None:
    allow = Settings(mllp_allow="10.0.0.0/8, 192.168.1.5,::1").mllp_allow_networks()
    assert allow is not None and [str(n) for n in allow] == [
        "10.0.0.0/8",
        "192.168.1.5/32",
        "::1/128",
    ]
    assert Settings().mllp_allow_networks() is None
    with pytest.raises(ConfigError, match="RADBRIDGE_MLLP_ALLOW: 'ten"):
        Settings(mllp_allow="ten.0.0.0/8").mllp_allow_networks()


def test_embedded_redis_socket_is_in_the_data_dir_or_a_clear_error(tmp_path: Path) -> None:
    """The socket lives in the data dir; one longer than a unix socket allows (107 bytes) is
    a ConfigError naming RADBRIDGE_DATA_DIR, not a silent fallback to /tmp."""
    from app.embedded_redis import MAX_SOCKET_PATH_BYTES, broker_url, socket_path

    assert socket_path(tmp_path) == tmp_path.resolve() / "redis.sock"
    assert broker_url(tmp_path) == f"redis+socket://{tmp_path.resolve() / 'redis.sock'}"
    deep = tmp_path / ("d" * (MAX_SOCKET_PATH_BYTES - len(str(tmp_path.resolve())) - 10))
    with pytest.raises(ConfigError, match="RADBRIDGE_DATA_DIR is too long"):
        socket_path(deep)


def test_the_insights_ask_the_model_only_when_a_real_one_is_configured(tmp_path: Path) -> None:
    real = tmp_path / "hospital-model.gguf"
    assert Settings(stage="llm").insights_model is False  # the bundled test model
    assert Settings(stage="llm", engine="openai").insights_model is True
    assert Settings(model_path=real).insights_model is True
    assert Settings(model_path=real, insights_model=False).insights_model is False
    assert Settings(stage="llm", insights_model=True).insights_model is True
