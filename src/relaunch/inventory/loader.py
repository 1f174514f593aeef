"""Load one site's inventory: YAML with line tracking, validated against the schema.

``load(path)`` either returns a valid ``Inventory`` or raises one ``InventoryError``
that lists every problem as ``file:line: key.path: what was expected, got what``.
Loading reads the file and nothing else: no secrets are resolved, nothing is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import types
import typing
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from relaunch.inventory import model as _model
from relaunch.inventory.errors import InventoryError, Problem
from relaunch.inventory.model import Inventory
from relaunch.inventory.source import KeyPath, Source, _short, parse

log = logging.getLogger(__name__)

_SITE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_MAX_BYTES = 1_000_000
_SOURCES: dict[int, Source] = {}


def inventory_path(site: str, root: Path | str | None = None) -> Path:
    """Return ``<root>/inventory/<site>.yml`` (root: the current directory, i.e. the repository root).

    Raise InventoryError if ``site`` is not a site name (lowercase letters, digits, dashes),
    so a --site value can never point outside the inventory directory.
    """
    if not isinstance(site, str) or not _SITE.match(site):
        raise InventoryError(
            Problem("", None, "site", f"expected a site name (lowercase letters, digits and dashes, e.g. 'example'), got {_short(site)}")
        )
    return Path.cwd() / "inventory" / f"{site}.yml" if root is None else Path(root) / "inventory" / f"{site}.yml"


def load_site(site: str, root: Path | str | None = None) -> Inventory:
    """Load ``inventory/<site>.yml`` under ``root``; its ``site:`` must be ``site``. Raise InventoryError otherwise."""
    path = inventory_path(site, root)
    inv = load(path)
    if inv.site != site:
        src = source_of(inv)
        raise InventoryError(
            Problem(src.file, src.line_of(("site",)), "site", f"expected {site!r} (the file is {path.name}), got {inv.site!r}")
        )
    return inv


def load(path: Path | str) -> Inventory:
    """Read, parse and validate one inventory file. Return the Inventory.

    Raise InventoryError (every problem found, each with file, line, key path and the
    expectation) if the file is missing or unreadable, is not YAML, is not a mapping, or
    does not match the schema, including cross references between its sections.
    Secrets are not resolved here (see ``relaunch.inventory.secrets.resolve_all``).
    """
    path = Path(path)
    file = display_name(path)
    try:
        if path.is_dir():
            raise InventoryError(Problem(file, None, "", "is a directory, expected an inventory file", "file"))
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InventoryError(Problem(file, None, "", "no such inventory file", "file")) from None
    except OSError as exc:
        raise InventoryError(Problem(file, None, "", f"cannot be read: {exc.strerror or exc}", "file")) from None
    if len(raw) > _MAX_BYTES:
        raise InventoryError(Problem(file, None, "", f"is {len(raw)} bytes; an inventory is at most {_MAX_BYTES}", "file"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InventoryError(Problem(file, line, "", "not UTF-8 text", "yaml")) from None
    inv = _validate(text, file, path.resolve())
    log.debug("loaded inventory %s (site %s)", file, inv.site)
    return inv


def load_text(text: str, file: str = "<inventory>") -> Inventory:
    """Like ``load`` for YAML text already read; ``file`` is how messages name it."""
    return _validate(text, file, None)


def _validate(text: str, file: str, origin: Path | None) -> Inventory:
    data, source = parse(text, file)
    source = dataclasses.replace(source, origin=origin)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else _got(data)
        keys = ", ".join(k for k, f in Inventory.model_fields.items() if f.is_required())
        raise InventoryError(Problem(file, source.line_of(()), "", f"expected a mapping with keys {keys}, ..., got {got}"))
    try:
        inv = Inventory.model_validate(data, context={"base_dir": origin.parent} if origin else None)
    except ValidationError as exc:
        raise InventoryError(translate(exc, data, source), file=file) from None
    _SOURCES[id(inv)] = source
    weakref.finalize(inv, _SOURCES.pop, id(inv), None)
    return inv


def source_of(inv: Inventory) -> Source:
    """Where ``inv`` was loaded from (file and lines); an empty Source for one built in code."""
    return _SOURCES.get(id(inv)) or Source("")


def display_name(path: Path) -> str:
    """How messages name a file: relative to the current directory when inside it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


# ---------------------------------------------------------------------------------------
# pydantic errors -> problems


@dataclass
class _Where:
    path: KeyPath  # data path, union tags removed
    field: FieldInfo | None  # the field the last key names (None for list/dict items)
    annotation: Any  # the type expected at path
    secret: bool  # a secret reference lives here: never echo the input
    union_at: KeyPath | None  # where a (non-optional) union was crossed
    union_branch_model: bool  # the error came from the union's model branch
    union: Any


def translate(exc: ValidationError, data: Any, source: Source) -> list[Problem]:
    """Turn a pydantic ValidationError on ``data`` into problems pointing at ``source`` lines."""
    problems: list[Problem] = []
    seen_unions: set[KeyPath] = set()
    for err in exc.errors(include_url=False):
        where = _walk(tuple(err["loc"]), data, err["type"])
        if where.union_at is not None:
            at_value = _get(data, where.union_at)
            if isinstance(at_value, dict) != where.union_branch_model:
                continue  # the user wrote the other form: its errors are the relevant ones
            if not isinstance(at_value, dict):
                if where.union_at in seen_unions:
                    continue
                seen_unions.add(where.union_at)
                line = source.line_of(where.union_at)
                problems.append(
                    Problem(source.file, line, source.describe(where.union_at), f"expected {_expect(where.union)}, got {_got(at_value)}")
                )
                continue
        problems.extend(_problems(err, where, data, source))
    problems.sort(key=lambda p: (p.line or 0))
    return problems or [Problem(source.file, None, "", str(exc))]


def _problems(err: Any, where: _Where, data: Any, source: Source) -> list[Problem]:
    kind: str = err["type"]
    path = where.path
    file = source.file

    def at(p: KeyPath, message: str, code: str = "schema") -> Problem:
        return Problem(file, source.line_of(p), source.describe(p), message, code)

    value = err.get("input")
    got = "a value that is not a reference (not shown)" if where.secret else _got(value)
    ctx = err.get("ctx") or {}
    if kind == "inventory":  # our model validators: each problem at its own key
        return [at((*path, *rel), message, "reference" if len(path) == 0 else "schema") for rel, message in ctx["problems"]]
    if kind == "missing":
        parent, key = path[:-1], path[-1]
        desc = f" ({where.field.description})" if where.field is not None and where.field.description else ""
        return [at(parent, f"missing required key {key!r}{desc}")]
    if kind == "extra_forbidden":
        parent, key = path[:-1], path[-1]
        known = _model_keys(_walk(parent, data, "").annotation)
        hint = ""
        close = difflib.get_close_matches(str(key), known, n=1) if isinstance(key, str) else []
        if close:
            hint = f"; did you mean {close[0]!r}?"
        return [at(path, f"unknown key {_short(key)} (expected one of: {', '.join(known)}){hint}")]
    if kind == "invalid_key":
        return [at(path, f"keys must be text, got {_got(path[-1] if path else value)}")]
    if err["loc"] and err["loc"][-1] == "[key]":
        return [at(path, f"keys must be text, got {_got(path[-1] if path else value)}")]
    if kind == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
        return [at(path, f"expected {message}, got {got}")]
    if kind == "too_short":
        return [at(path, f"expected at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}")]
    if kind == "too_long":
        return [at(path, f"expected at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}")]
    expectation = _expect(where.annotation, where.field)
    hint = ""
    if isinstance(value, bool) and not _accepts_bool(where.annotation):
        hint = " (YAML reads unquoted yes/no/on/off/true/false as booleans: quote the value)"
    elif isinstance(value, int | float) and not isinstance(value, bool) and _is_str(where.annotation):
        hint = " (quote it to make it text)"
    return [at(path, f"expected {expectation}, got {got}{hint}")]


def _walk(loc: KeyPath, data: Any, kind: str) -> _Where:
    """Follow a pydantic loc through the schema and the data: drop union tags, find the field and type."""
    ann: Any = Inventory
    field: FieldInfo | None = None
    cur: Any = data
    path: list[Any] = []
    secret = False
    union_at: KeyPath | None = None
    branch_model = False
    union: Any = None
    parts = [p for p in loc if p != "[key]"]
    i = 0
    while i < len(parts):
        part = parts[i]
        ann, meta = _unwrap(ann)
        secret = secret or _is_secret_meta(meta)
        members = _union_members(ann)
        if members is not None:  # the next loc part names the branch
            union, union_at = ann, tuple(path)
            model_members = [m for m in members if _is_model(m)]
            if isinstance(part, str) and model_members and part in {m.__name__ for m in model_members}:
                ann, branch_model = next(m for m in model_members if m.__name__ == part), True
            else:
                others = [m for m in members if not _is_model(m)]
                ann, branch_model = (others[0] if others else Any), False
            i += 1
            continue
        if _is_model(ann):
            if isinstance(part, str) and part in ann.model_fields:
                field = ann.model_fields[part]
                ann = _field_annotation(field)
                secret = _is_secret_meta(field.metadata) or _mentions_secret(ann)
            else:
                field, ann = None, Any
        elif typing.get_origin(ann) is list:
            ann, field = (typing.get_args(ann) or (Any,))[0], None
        elif typing.get_origin(ann) is dict:
            ann, field = (typing.get_args(ann) or (Any, Any))[1], None
        else:
            ann, field = Any, None
        path.append(part)
        cur = cur.get(part) if isinstance(cur, dict) else (cur[part] if isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur) else None)
        i += 1
    ann, meta = _unwrap(ann)
    secret = secret or _is_secret_meta(meta) or (field is not None and _is_secret_meta(field.metadata))
    return _Where(tuple(path), field, ann, secret, union_at, branch_model, union)


def _field_annotation(field: FieldInfo) -> Any:
    ann = field.annotation
    if field.metadata:
        ann = typing.Annotated[(ann, *field.metadata)]  # type: ignore[misc]
    return ann


def _unwrap(ann: Any) -> tuple[Any, list[Any]]:
    """Strip Annotated and Optional; return (type, metadata)."""
    meta: list[Any] = []
    while True:
        if typing.get_origin(ann) is typing.Annotated:
            meta.extend(ann.__metadata__)
            ann = typing.get_args(ann)[0]
            continue
        members = _union_args(ann)
        if members is not None:
            non_none = [m for m in members if m is not type(None)]
            if len(non_none) == 1:
                ann = non_none[0]
                continue
        return ann, meta


def _union_args(ann: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(ann) in (Union, types.UnionType):
        return typing.get_args(ann)
    return None


def _union_members(ann: Any) -> tuple[Any, ...] | None:
    members = _union_args(ann)
    if members is None:
        return None
    return tuple(m for m in members if m is not type(None))


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _is_secret_meta(meta: Iterable[Any]) -> bool:
    return any(getattr(m, "func", None) is _model._secret for m in meta)


def _mentions_secret(ann: Any) -> bool:
    if typing.get_origin(ann) is typing.Annotated and _is_secret_meta(ann.__metadata__):
        return True
    return any(_mentions_secret(a) for a in typing.get_args(ann) if not isinstance(a, str))


def _model_keys(ann: Any) -> list[str]:
    ann, _ = _unwrap(ann)
    return list(ann.model_fields) if _is_model(ann) else []


def _accepts_bool(ann: Any) -> bool:
    ann, _ = _unwrap(ann)
    return ann is bool or ann is Any


def _is_str(ann: Any) -> bool:
    ann, _ = _unwrap(ann)
    return ann is str


def _expect(ann: Any, field: FieldInfo | None = None) -> str:
    """What a value of type ``ann`` (with the field's constraints) looks like, in words."""
    ann, meta = _unwrap(ann)
    metadata = list(meta) + (list(field.metadata) if field is not None else [])
    bounds = {k: getattr(m, k) for m in metadata for k in ("ge", "gt", "le", "lt") if getattr(m, k, None) is not None}
    members = _union_members(ann)
    if members is not None:
        return " or ".join(_expect(m) for m in members)
    if typing.get_origin(ann) is Literal:
        values = [repr(v) for v in typing.get_args(ann)]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if ann is bool:
        return "true or false"
    if ann is int or ann is float:
        noun = "an integer" if ann is int else "a number"
        low = bounds.get("ge", bounds.get("gt"))
        high = bounds.get("le", bounds.get("lt"))
        if "ge" in bounds and "le" in bounds:
            return f"{noun} between {bounds['ge']} and {bounds['le']}"
        parts = []
        if low is not None:
            parts.append(f"{'at least' if 'ge' in bounds else 'more than'} {low}")
        if high is not None:
            parts.append(f"{'at most' if 'le' in bounds else 'less than'} {high}")
        return noun + (" " + " and ".join(parts) if parts else "")
    if ann is str:
        return "text"
    if ann is IPv4Address:
        return "an IPv4 address (e.g. 203.0.113.10)"
    if typing.get_origin(ann) is list:
        return "a list"
    if typing.get_origin(ann) is dict:
        return "a mapping (key: value)"
    if _is_model(ann):
        return f"a mapping with keys {', '.join(ann.model_fields)}"
    return "a valid value"


def _got(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str | int | float):
        return _short(value)
    return f"a {type(value).__name__}"


def _get(data: Any, path: KeyPath) -> Any:
    cur = data
    for part in path:
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        else:
            return None
    return cur
