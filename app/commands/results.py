"""`radbridge validate` (FHIR R4 JSON against the models, the schema and the project's rules) and
`radbridge show` (the coded Observations and insights of Bundles, or a stored message's
deliveries)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from adapter.errors import InputError
from adapter.inputs import collect_files
from app.commands.common import EXIT_INTERNAL, cli_settings, err, fail, out
from mappings.errors import TemplateError


def validate(
    paths: Annotated[list[Path], typer.Argument(help="Bundles or resources (files or folders)")],
) -> None:
    """Validate FHIR R4 JSON: R4B models, the official R4 JSON schema, project rules."""
    from conformance.errors import ConformanceError
    from conformance.validate import format_problem, validate_paths
    from mappings.template import load_templates

    missing = [p for p in paths if not p.exists()]
    if missing:
        raise fail(f"{missing[0]}: no such file or folder")
    settings = cli_settings()
    try:
        templates = list(load_templates(settings.templates_dir).values())
        problems = validate_paths(paths, templates=templates)
    except (ConformanceError, TemplateError) as exc:
        raise fail(str(exc)) from None
    for problem in problems:
        sys.stdout.write(format_problem(problem) + "\n")
    errors = sum(1 for p in problems if p.severity == "error")
    err.print(f"{len(problems)} problem(s), {errors} error(s)")
    if errors:
        raise typer.Exit(EXIT_INTERNAL)


def show(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Bundles written by `radbridge extract`")
    ] = None,
    message: Annotated[
        int | None,
        typer.Option("--message", "-m", help="a stored message (job) id: its delivery states"),
    ] = None,
) -> None:
    """Print the coded Observations and the insights of Bundles as tables, or (--message) where
    a stored message's results stand at each destination."""
    from app.show_insights import concept_text, quote, side_text

    if message is not None:
        _show_deliveries(message)
        return
    if not paths:
        raise fail("give Bundle files or --message ID")
    try:
        files = [p for p in collect_files(paths) if p.suffix == ".json"]
    except InputError as exc:
        raise fail(str(exc)) from None
    for path in files:
        bundle = json.loads(path.read_text("utf-8"))
        table = Table(title=path.name)
        for column in ("code", "value", "body site", "side", "evidence"):
            table.add_column(column)
        for entry in bundle.get("entry", []):
            resource = entry.get("resource", {})
            if resource.get("resourceType") != "Observation":
                continue
            table.add_row(
                concept_text(resource.get("code")),
                _observation_value_text(resource),
                concept_text(resource.get("bodySite") or {}),
                side_text(resource),
                quote(resource),
            )
        out.print(table)
        _print_insights(path.name, bundle)
    for folder in (p for p in paths if p.is_dir()):
        _print_rejections(folder / "rejected.jsonl")


def _print_rejections(path: Path) -> None:
    """`show DIR`: the reports `extract` rejected or found no template for (its
    `rejected.jsonl`: id and reason; a `no_template` report's Bundle is shown above)."""
    if not path.is_file():
        return
    lines = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    if lines:
        table = Table(title=f"{path.parent.name}/{path.name}")
        for column in ("id", "reason"):
            table.add_column(column)
        for line in lines:
            table.add_row(str(line.get("control_id") or ""), str(line.get("reason") or ""))
        out.print(table)


def _print_insights(name: str, bundle: dict[str, Any]) -> None:
    """`show`'s insights table of one Bundle (`app.show_insights`), when it has any."""
    from app.show_insights import COLUMNS, insight_rows

    rows = insight_rows(bundle)
    if rows:
        found = Table(title=f"{name}: insights")
        for column in COLUMNS:
            found.add_column(column)
        for row in rows:
            found.add_row(*row)
        out.print(found)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _show_deliveries(message_id: int) -> None:
    """The message's state and each delivery of its Bundles, per destination."""
    from adapter import destinations
    from adapter.store import Store
    from adapter.store.deliveries import shown_delivery_state

    settings = cli_settings()
    store = Store.open(settings)
    row = store.get_message(message_id)
    if row is None:
        raise fail(f"no message {message_id}")
    out.print(f"message {message_id}: {row.state}" + (f" ({row.reason})" if row.reason else ""))
    table = Table(title=f"deliveries of message {message_id}")
    for column in ("bundle", "destination", "state", "attempts", "next attempt", "failing since",
                   "reason"):  # fmt: skip
        table.add_column(column)
    records = store.delivery_states(message_id)
    for record in records:
        state = str(record["state"])
        table.add_row(
            str(record["bundle_id"])[:8],
            str(record["target"]),
            shown_delivery_state(state),
            str(record["attempts"]),
            _when(record["next_attempt_at"]) if state == "retry" else "",
            _when(record["failing_since"]),
            str(record["reason"] or ""),
        )
    out.print(table)
    recorded = {str(r["target"]) for r in records}
    for destination in destinations.bundle_destinations(settings):
        if destination.name not in recorded and store.bundles_of_message(message_id):
            out.print(f"{destination.name}: nothing recorded yet (queued for reconcile)")


def _observation_value_text(observation: dict[str, Any]) -> str:
    """The Observation's value: a concept, an integer (scale), or a quantity with its unit;
    its components (qualifier, sizes, grades) are appended."""
    from app.show_insights import component_text, concept_text

    if "valueInteger" in observation:
        text = str(observation["valueInteger"])
    elif "valueQuantity" in observation:
        quantity = observation["valueQuantity"]
        text = f"{quantity.get('value')} {quantity.get('unit') or quantity.get('code') or ''}"
    else:
        text = concept_text(observation.get("valueCodeableConcept"))
    for component in observation.get("component") or []:
        text += f"; {component_text(component)}"
    return text.strip()
