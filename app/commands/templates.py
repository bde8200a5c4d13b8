"""`radbridge templates list|show|check|import`: the extraction templates."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from app.commands.common import EXIT_INTERNAL, cli_settings, err, fail, resolve_templates
from mappings.errors import TemplateError

templates_app = typer.Typer(
    help="Extraction templates: list, show one, check built-in or your own YAML files.",
    no_args_is_help=True,
)


def _template_files(paths: list[Path]) -> list[Path]:
    import importlib.resources

    from mappings.template import template_files

    if not paths:
        folder = Path(str(importlib.resources.files("mappings") / "templates"))
        return sorted(folder.glob("*.yaml"))
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(template_files(path))
        elif path.exists():
            files.append(path)
        else:
            raise fail(f"{path}: no such file or folder")
    return files


@templates_app.command("list")
def templates_list(
    markdown: Annotated[
        bool,
        typer.Option("--markdown", help="a Markdown table (the README's, generated from here)"),
    ] = False,
) -> None:
    """The templates (built-in and RADBRIDGE_TEMPLATES_DIR), one per line: id, version, title,
    languages, variables by type."""
    from app.template_table import readme_block
    from mappings.template import load_templates

    try:
        templates = load_templates(cli_settings().templates_dir)
    except TemplateError as exc:
        raise fail(str(exc), EXIT_INTERNAL) from None
    if markdown:
        sys.stdout.write(readme_block(templates.values()) + "\n")
        return
    for template in templates.values():
        kinds = Counter(variable.type.value for variable in template.variables)
        columns = [
            template.id,
            template.version,
            template.title,
            ",".join(template.languages),
            ", ".join(f"{count} {kind}" for kind, count in kinds.items()),
        ]
        sys.stdout.write("\t".join(columns) + "\n")


def _code_text(code: Any, uncoded_reason: str | None) -> str:
    if code is None:
        return f"uncoded: {uncoded_reason or '(no reason)'}"
    system = str(code.system).rsplit("/", 1)[-1]
    return f"{system} {code.code} {code.display}"


def _value_text(variable: Any) -> str:
    if variable.scale is not None:
        return f"{variable.scale.min}..{variable.scale.max}"
    if variable.unit is not None:
        bounds = variable.range
        return (f"{bounds.min:g}..{bounds.max:g} " if bounds else "") + str(variable.unit.code)
    if variable.type.value == "presence":
        where = f"; at {', '.join(variable.locations)}" if variable.locations else ""
        return f"present|absent|uncertain{where}"
    return "|".join(option.id for option in variable.options)


@templates_app.command("show")
def templates_show(
    template: Annotated[str, typer.Argument(help="template id or a template YAML file")],
) -> None:
    """A template's variables, one per line (tab-separated): id (label), type, values, code or
    'uncoded: reason'; enum options and qualifiers indented below their variable."""
    try:
        (shown,) = resolve_templates(template, cli_settings().templates_dir).values()
    except TemplateError as exc:
        raise fail(str(exc)) from None
    lines = [f"{shown.id} {shown.version}: {shown.title} ({', '.join(shown.languages)})"]
    for variable in shown.variables:
        code = _code_text(variable.code, variable.uncoded_reason)
        lines.append(
            f"{variable.id} ({variable.label})\t{variable.type.value}\t{_value_text(variable)}\t{code}"
        )
        options, indent = list(variable.options), "  "
        if variable.qualifier is not None:
            qualifier = variable.qualifier
            code = _code_text(qualifier.code, qualifier.uncoded_reason)
            lines.append(f"  {qualifier.id} ({qualifier.label})\tqualifier\t\t{code}")
            options, indent = list(qualifier.options), "    "
        for option in options:
            code = _code_text(option.code, option.uncoded_reason)
            lines.append(f"{indent}{option.id} ({option.label})\toption\t\t{code}")
    sys.stdout.write("\n".join(lines) + "\n")


@templates_app.command("check")
def templates_check(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="template YAML files or folders; default: the built-in templates"),
    ] = None,
) -> None:
    """Validate templates: structure, types, codes (installed SNOMED CT / LOINC tables or a cited
    source), UCUM units, DICOM modalities, synonyms, ids unique and none a built-in's. Every
    problem of every file is listed, by key name; exit 1 on a problem."""
    from mappings.template import check_template_files

    files = _template_files(list(paths or []))
    if not files:
        raise fail("no template files found")
    _, problems = check_template_files(files)
    for problem in problems:
        sys.stdout.write(f"{problem.source}\t{problem.field}\t{problem.problem}\n")
    err.print(f"{len(files)} template file(s) checked, {len(problems)} problem(s)")
    if problems:
        raise typer.Exit(EXIT_INTERNAL)


@templates_app.command("import")
def templates_import(
    task: Annotated[Path, typer.Argument(help="llm_extractinator task file (JSON)")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="template YAML to write (default: stdout)")
    ] = None,
    language: Annotated[
        list[str] | None,
        typer.Option("--language", help="template language, repeatable (default: nl, en)"),
    ] = None,
) -> None:
    """Import an llm_extractinator task as a template YAML to inspect, edit and run
    (`radbridge extract --template FILE.yaml`); unsupported tasks (NER) exit 2 with the reason."""
    from mappings.extractinator import DEFAULT_LANGUAGES, load_task

    try:
        imported = load_task(task, tuple(language or DEFAULT_LANGUAGES))
    except TemplateError as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from None
    if out_file is None:
        sys.stdout.write(imported.yaml)
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(imported.yaml, encoding="utf-8")
    kinds = Counter(variable.type.value for variable in imported.template.variables)
    summary = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
    err.print(f"wrote {out_file}: template {imported.template.id} ({summary})")
