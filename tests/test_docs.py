"""Docs that match the code (issue 23 item 7): the README's template table is generated from the
templates (`radbridge templates list --markdown`), so it cannot drift; one story on mutual TLS;
the `eval` formats are listed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from app.template_table import BEGIN, END, readme_block
from mappings.template import load_builtin_templates

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text("utf-8")
DEPLOY = (ROOT / "docs" / "deploy.md").read_text("utf-8")


def test_the_readme_template_table_is_the_generated_one() -> None:
    start, end = README.index(BEGIN), README.index(END) + len(END)
    expected = readme_block(load_builtin_templates().values())
    assert README[start:end] == expected, (
        "the README's template table is out of date: replace it with the output of "
        "`radbridge templates list --markdown`"
    )


def test_the_markdown_command_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "templates", "list",
         "--markdown"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == readme_block(load_builtin_templates().values())


def test_counts_in_the_table_are_the_templates() -> None:
    chest = next(line for line in README.splitlines() if line.startswith("| `chest_findings`"))
    assert f"| {len(load_builtin_templates()['chest_findings'].variables)} (" in chest


def test_one_story_on_mutual_tls() -> None:
    for text in (README, DEPLOY):
        assert "RADBRIDGE_MLLP_TLS_CLIENT_CA" in text
        assert "does not ask senders for client certificates" not in text
        assert "terminate TLS in front of radbridge" not in text


def test_eval_formats_are_listed() -> None:
    from conformance.evaluate import DATASET_FORMATS

    section = README[README.index("## Evaluation") : README.index("## FHIR output")]
    names = {
        "negex": "NegEx",
        "openi": "Open-i JSONL",
        "dragon": "DRAGON",
        "jsonl": "labelled JSONL",
    }
    for fmt in DATASET_FORMATS:
        assert f"| {names[fmt.name]} |" in section, fmt.name


ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text("utf-8")
PACKAGES = ("mappings", "adapter", "workers", "conformance", "app")


def test_the_architecture_map_names_every_module_and_only_modules_that_exist() -> None:
    """Issue 22 item 7: docs/architecture.md is the map; a module added, moved or removed
    without the map fails here."""
    modules = {
        path.relative_to(ROOT)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py" and "migrations" not in path.parts
    }
    unnamed = sorted(str(m) for m in modules if m.name not in ARCHITECTURE)
    assert unnamed == [], f"modules docs/architecture.md does not name: {unnamed}"
    named = {m.group(1) for m in re.finditer(r"\b([a-z_0-9]+/[a-z_0-9/]+\.py)\b", ARCHITECTURE)}
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert missing == [], f"docs/architecture.md names paths that do not exist: {missing}"
