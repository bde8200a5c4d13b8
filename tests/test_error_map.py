"""The error tree (STYLE.md, httpx's pattern): every exception class the packages define is in
the RadbridgeError tree, drawn in the docstrings, and maps to an HL7 0357 code (NAK / application
ACK) and an HTTP status + OperationOutcome issue code, which the API answers with."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mappings.errors import HL7ErrorCode, RadbridgeError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mappings", "adapter", "workers", "conformance", "app")
DRAWN = ("mappings", "adapter", "workers", "conformance")  # the packages with an errors module
_NAME = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z][A-Za-z]+)\b")
# FHIR R4 IssueType codes (http://hl7.org/fhir/R4/valueset-issue-type.html)
ISSUE_TYPES = {
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
    "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
    "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension",
    "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
    "exception", "timeout", "incomplete", "throttled", "informational",
}  # fmt: skip


def _import_all() -> None:
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            importlib.import_module(info.name)


def _tree() -> list[type[RadbridgeError]]:
    _import_all()
    found: list[type[RadbridgeError]] = []
    todo: list[type[RadbridgeError]] = [RadbridgeError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(c for c in cls.__subclasses__() if c.__module__.split(".")[0] in PACKAGES)
    return found


def test_every_exception_class_is_in_the_radbridge_tree() -> None:
    _import_all()
    outside = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # alembic scripts run inside alembic, not importable on their own
            module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            module_name = module_name.removesuffix(".__init__")
            module = importlib.import_module(module_name)
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.ClassDef):
                    cls = getattr(module, node.name, None)
                    if (
                        isinstance(cls, type)
                        and issubclass(cls, BaseException)
                        and not issubclass(cls, RadbridgeError)
                    ):
                        outside.append(f"{module_name}.{node.name}")
    assert outside == []


def drawing(text: str) -> dict[str, str | None]:
    """The class tree a docstring draws: each class name -> its parent's (None for the root).
    A line draws a class when a name follows its box-drawing prefix (├── / └──, or none for the
    root); its depth is the prefix's width over 4. Other lines (prose, continued notes) are
    skipped."""
    tree: dict[str, str | None] = {}
    stack: list[str] = []
    margin = 0  # the root's indentation: the drawing's left edge
    for line in text.splitlines():
        if line.lstrip().startswith("RadbridgeError"):
            margin = len(line) - len(line.lstrip())
        found = _NAME.match(line[margin:])
        if found is None or not (found["name"] == "RadbridgeError" or "──" in found["indent"]):
            continue
        depth = len(found["indent"]) // 4
        del stack[depth:]
        tree[found["name"]] = stack[-1] if stack else None
        stack.append(found["name"])
    return tree


def _real(classes: list[type[RadbridgeError]]) -> dict[str, str | None]:
    return {
        cls.__name__: (None if cls is RadbridgeError else cls.__bases__[0].__name__)
        for cls in classes
    }


def test_the_drawing_parser_reads_depth_and_skips_prose() -> None:
    text = """Root.

    RadbridgeError                root
    ├── AError                    a
    │   ├── BError                b, its note
    │   │                         continued on a line of its own
    │   └── CError                c
    └── DError                    d
    Some prose.
"""
    assert drawing(text) == {
        "RadbridgeError": None,
        "AError": "RadbridgeError",
        "BError": "AError",
        "CError": "AError",
        "DError": "RadbridgeError",
    }


def test_the_root_drawing_is_the_class_tree() -> None:
    """mappings/errors.py draws every class of the tree, each under its real parent: a class
    added, moved or renamed without its line fails here."""
    import mappings.errors

    assert drawing(mappings.errors.__doc__ or "") == _real(_tree())


@pytest.mark.parametrize("package", DRAWN[1:])
def test_each_package_drawing_is_its_subtree(package: str) -> None:
    """adapter/, workers/ and conformance/ errors.py draw their root's whole subtree."""
    drawn = drawing(importlib.import_module(f"{package}.errors").__doc__ or "")
    (top,) = [name for name, parent in drawn.items() if parent == "RadbridgeError"]
    below = [cls for cls in _tree() if top in (c.__name__ for c in cls.__mro__)]
    assert drawn == {"RadbridgeError": None} | _real(below)


@pytest.mark.parametrize("cls", _tree(), ids=lambda c: c.__name__)
def test_every_error_maps_to_a_nak_code_and_an_operation_outcome(
    cls: type[RadbridgeError], tmp_path: Path
) -> None:
    from adapter.api import create_app
    from adapter.settings import Settings
    from adapter.store import Store

    assert isinstance(cls.hl7_code, HL7ErrorCode)
    assert 400 <= cls.http_status < 600 and cls.issue_code in ISSUE_TYPES

    from adapter.api.errors import ApiError

    error = cls.__new__(cls)
    Exception.__init__(error, "the error's own text")
    if cls is ApiError:
        error = ApiError(409, "the error's own text", "conflict")
    settings = Settings(data_dir=tmp_path)  # type: ignore[arg-type]
    store = Store.open(settings)
    application = create_app(settings, store)

    @application.get("/raise")
    async def _raise() -> None:
        raise error

    response = TestClient(application, raise_server_exceptions=False).get("/raise")
    status = getattr(error, "status", None) or cls.http_status  # ApiError carries its own
    assert response.status_code == status
    issue = response.json()["issue"][0]
    assert response.json()["resourceType"] == "OperationOutcome"
    if status >= 500:
        assert (
            "the error's own text" not in response.text and "correlation id" in issue["diagnostics"]
        )
    store.close()
