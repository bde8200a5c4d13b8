"""A FHIR search request read into a `SearchQuery` (pure), by FHIR R4's search rules.

- Parameters are the ones `mappings.search_params.SEARCH_PARAMETERS` declares for the type, plus
  the result parameters `_count`, `_sort` (`_lastUpdated`, `_id`, the type's date parameter;
  `-` for descending), `_summary=count`, `_total`, `_format` and `_pretty`, and `_offset` (the
  position of a page, written into `next` links by radbridge).
- Values: comma = OR (`status=final,amended`), a repeated parameter = AND
  (`date=ge2024-01-01&date=lt2024-02-01`); `\\,` `\\|` `\\$` `\\\\` are escapes. Token:
  `code`, `system|code`, `|code` (no system), `system|` (any code of the system); modifier
  `:not`. Reference: `id`, `Type/id`, `Type/id/_history/n`, this server's absolute URL, and the
  type modifier `:Type`. Date: a FHIR date of any precision with an optional prefix
  `eq ne gt lt ge le sa eb` (a `+` of a time zone that arrived as a space is read back as `+`).
- An unknown parameter (`_include`, `_has`, a chained one …), or one without a value, is
  refused (`SearchUnsupported`, 400) when the client sent `Prefer: handling=strict`, and
  otherwise ignored: left out of `used` (so out of the self link) and named in `ignored`. An
  unsupported modifier or prefix is always refused: ignoring it would widen the search.
Texts of errors name the parameter, never its value (values may be identifiers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from mappings.errors import FhirMappingError, MappingError
from mappings.fhir_dates import fhir_range
from mappings.search_params import SEARCH_PARAMETERS, SearchParam, date_param, search_param

DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
MAX_OR_VALUES = 100
MAX_CRITERIA = 32
_FORMAT_PARAMS = ("_format", "_pretty")
_ESCAPABLE = ",|$\\"


class SearchRefused(MappingError):
    """A search request radbridge will not run: a malformed value, too many values, an unsupported
    modifier, prefix or (under `Prefer: handling=strict`) parameter. The text names the parameter."""

    http_status = 400
    issue_code = "invalid"


class SearchUnsupported(SearchRefused):
    """A parameter, modifier or prefix radbridge does not support."""

    issue_code = "not-supported"


@dataclass(frozen=True)
class Token:
    """One token or reference value: `system` None matches any system ("" only none); `code`
    None any code. For references, `system` is the resource type and `code` the id."""

    system: str | None
    code: str | None


@dataclass(frozen=True)
class DateValue:
    """One date value: the prefix and the `[start, end)` range the written value stands for."""

    prefix: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence: any of `values` matches (OR); `negated` for `:not`."""

    param: SearchParam
    values: tuple[Token | DateValue, ...]
    negated: bool = False


@dataclass(frozen=True)
class SearchQuery:
    """A search to run: every criterion must match (AND), one page of `count` from `offset`."""

    resource_type: str
    criteria: tuple[Criterion, ...]
    count: int
    offset: int
    sort: tuple[tuple[str, bool], ...]  # (parameter name, descending)
    summary_count: bool
    used: tuple[tuple[str, str], ...]  # what the self link repeats (not _count / _offset)
    ignored: tuple[str, ...]  # why each ignored parameter was ignored

    def filters_status(self) -> bool:
        """Whether the client chose statuses (else retired resources are left out)."""
        return any(c.param.column == "status" for c in self.criteria)


@dataclass(frozen=True)
class HistoryQuery:
    """One page of an instance's history: versions written at or after `since`."""

    count: int
    offset: int
    since: datetime | None
    used: tuple[tuple[str, str], ...]
    ignored: tuple[str, ...]


def strict_handling(prefer: str | None) -> bool:
    """Whether a `Prefer` header asks for `handling=strict` (lenient is the default)."""
    for preference in (prefer or "").split(","):
        for part in preference.split(";"):
            name, _, value = part.strip().partition("=")
            if name.strip().lower() == "handling" and value.strip().strip('"').lower() == "strict":
                return True
    return False


def _split(value: str, separator: str) -> list[str]:
    """`value` split at each unescaped `separator`, escapes kept for the next split."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in value:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out: list[str] = []
    escaped = False
    for char in value:
        if escaped:
            out.append(char if char in _ESCAPABLE else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    if escaped:
        out.append("\\")
    return "".join(out)


class _Reader:
    """Reads the parameters of one request (strict or lenient)."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.used: list[tuple[str, str]] = []
        self.ignored: list[str] = []

    def ignore(self, name: str, why: str) -> None:
        """A parameter that is not applied: refused under strict handling, else noted."""
        if self.strict:
            raise SearchUnsupported(f"{name}: {why}")
        self.ignored.append(f"{name}: {why}; ignored")

    def integer(self, name: str, value: str, low: int, high: int) -> int:
        if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
            raise SearchRefused(f"{name} must be an integer from {low} to {high}")
        return int(value)


def _token(param: SearchParam, raw: str) -> Token:
    parts = _split(raw, "|")
    if len(parts) > 2:
        raise SearchRefused(f"{param.name}: a token is code, system|code, |code or system|")
    if len(parts) == 1:
        return Token(None, _unescape(parts[0]))
    system, code = _unescape(parts[0]), _unescape(parts[1])
    if not system and not code:
        raise SearchRefused(f"{param.name}: a token needs a system or a code")
    return Token(system, code or None)


def _reference(param: SearchParam, raw: str, type_filter: str | None, base_url: str) -> Token:
    value = _unescape(raw)
    if "://" in value:
        if not value.startswith(base_url.rstrip("/") + "/"):
            raise SearchRefused(
                f"{param.name}: an absolute reference must start with this server's base URL"
            )
        value = value[len(base_url.rstrip("/")) + 1 :]
    parts = value.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) == 1 and parts[0]:
        kind, ident = type_filter, parts[0]
    elif len(parts) == 2 and parts[0] and parts[1]:
        kind, ident = parts
        if type_filter is not None and kind != type_filter:
            raise SearchRefused(f"{param.name}:{type_filter} names another resource type")
    else:
        raise SearchRefused(f"{param.name}: a reference is id, Type/id or Type/id/_history/n")
    if kind is not None and param.targets and kind not in param.targets:
        raise SearchRefused(f"{param.name} references {' or '.join(param.targets)} only")
    return Token(kind, ident)


def _date(param: SearchParam, raw: str, zone: tzinfo) -> DateValue:
    value = _unescape(raw).replace(" ", "+")  # a time zone `+` sent unencoded reads as a space
    prefix = "eq"
    if len(value) > 2 and value[:2].isalpha():
        prefix, value = value[:2], value[2:]
        if prefix not in DATE_PREFIXES:
            raise SearchUnsupported(
                f"{param.name}: prefix {prefix!r} is not supported ({' '.join(DATE_PREFIXES)})"
            )
    try:
        start, end = fhir_range(value, zone)
    except FhirMappingError as exc:
        raise SearchRefused(f"{param.name}: {exc}") from None
    return DateValue(prefix, start, end)


def _criterion(
    param: SearchParam, modifier: str | None, raw: str, zone: tzinfo, base_url: str
) -> Criterion:
    negated = False
    type_filter = None
    if modifier is not None:
        if param.type == "token" and modifier == "not":
            negated = True
        elif param.type == "reference" and modifier[:1].isupper() and modifier.isalpha():
            if param.targets and modifier not in param.targets:
                raise SearchRefused(f"{param.name} references {' or '.join(param.targets)} only")
            type_filter = modifier
        else:
            raise SearchUnsupported(f"{param.name}:{modifier}: modifier not supported")
    raws = _split(raw, ",")
    if len(raws) > MAX_OR_VALUES:
        raise SearchRefused(f"{param.name}: more than {MAX_OR_VALUES} values")
    values: list[Token | DateValue] = []
    for one in raws:
        if not one:
            raise SearchRefused(f"{param.name}: an empty value in a comma-separated list")
        if param.type == "date":
            values.append(_date(param, one, zone))
        elif param.type == "reference":
            values.append(_reference(param, one, type_filter, base_url))
        else:
            values.append(_token(param, one))
    return Criterion(param, tuple(values), negated)


def _sort_keys(resource_type: str, raw: str, reader: _Reader) -> tuple[tuple[str, bool], ...]:
    allowed = {"_lastUpdated", "_id"}
    dated = date_param(resource_type)
    if dated is not None:
        allowed.add(dated.name)
    keys = []
    for item in raw.split(","):
        name = item.strip().removeprefix("-")
        if name not in allowed:
            reader.ignore("_sort", f"sorting by {name or 'nothing'} is not supported")
            return ()
        keys.append((name, item.strip().startswith("-")))
    return tuple(keys)


def parse_search(
    resource_type: str,
    items: Sequence[tuple[str, str]],
    *,
    strict: bool,
    base_url: str,
    zone: tzinfo = UTC,
    default_count: int = 100,
    max_count: int = 1000,
) -> SearchQuery:
    """Read the (name, value) pairs of a search of `resource_type` (see the module docstring)."""
    if resource_type not in SEARCH_PARAMETERS:
        raise SearchUnsupported(f"{resource_type} is not searchable here")
    reader = _Reader(strict)
    criteria: list[Criterion] = []
    count, offset = default_count, 0
    sort: tuple[tuple[str, bool], ...] = ()
    summary_count = False
    seen: set[str] = set()
    for name, raw in items:
        if name in ("_count", "_offset", "_sort", "_summary", "_total"):
            if name in seen:
                raise SearchRefused(f"{name} is given more than once")
            seen.add(name)
        if name == "_count":
            count = reader.integer(name, raw, 0, max_count)
        elif name == "_offset":
            offset = reader.integer(name, raw, 0, 2**63 - 1)
        elif name == "_sort":
            sort = _sort_keys(resource_type, raw, reader)
            if sort:
                reader.used.append((name, raw))
        elif name == "_summary":
            if raw == "count":
                summary_count = True
                reader.used.append((name, raw))
            elif raw == "false":
                reader.used.append((name, raw))
            else:
                reader.ignore(name, "only count and false are supported")
        elif name == "_total":
            if raw not in ("none", "estimate", "accurate"):
                raise SearchRefused("_total is none, estimate or accurate")
            reader.used.append((name, raw))  # the total is always counted exactly
        elif name in _FORMAT_PARAMS:
            reader.used.append((name, raw))  # checked where the response is written
        else:
            base, _, modifier = name.partition(":")
            param = search_param(resource_type, base)
            if "." in name:
                reader.ignore(name, "chained parameters are not supported")
            elif param is None:
                reader.ignore(name, f"not a search parameter of {resource_type} here")
            elif not raw:
                reader.ignore(name, "no value")
            else:
                criteria.append(
                    _criterion(param, modifier if ":" in name else None, raw, zone, base_url)
                )
                reader.used.append((name, raw))
    if len(criteria) > MAX_CRITERIA:
        raise SearchRefused(f"more than {MAX_CRITERIA} search parameters")
    return SearchQuery(
        resource_type,
        tuple(criteria),
        0 if summary_count else count,
        offset,
        sort,
        summary_count,
        tuple(reader.used),
        tuple(reader.ignored),
    )


def parse_history(
    items: Sequence[tuple[str, str]],
    *,
    strict: bool,
    default_count: int = 100,
    max_count: int = 1000,
) -> HistoryQuery:
    """Read the parameters of an instance history: `_count`, `_since` (an instant), `_offset`,
    `_format`, `_pretty`; others are refused (strict) or ignored."""
    reader = _Reader(strict)
    count, offset = default_count, 0
    since: datetime | None = None
    for name, raw in items:
        if name == "_count":
            count = reader.integer(name, raw, 0, max_count)
        elif name == "_offset":
            offset = reader.integer(name, raw, 0, 2**63 - 1)
        elif name == "_since":
            try:
                since = fhir_range(raw.replace(" ", "+"))[0]
            except FhirMappingError as exc:
                raise SearchRefused(f"_since: {exc}") from None
            reader.used.append((name, raw))
        elif name in _FORMAT_PARAMS:
            reader.used.append((name, raw))
        else:
            reader.ignore(name, "not a history parameter here")
    return HistoryQuery(count, offset, since, tuple(reader.used), tuple(reader.ignored))
