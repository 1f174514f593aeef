"""YAML text to plain data, remembering the line of every key and list item.

PyYAML's composer gives a node tree with marks; this module builds the Python data from
that tree itself (scalars through SafeLoader's own constructors, so YAML 1.1 types stay
what users expect) and records, for every key path, the 1-based line it starts on.
The data is plain: dicts, lists, scalars. Anything YAML cannot turn into such data is
reported as an InventoryError naming the file and line, never as a PyYAML exception.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from relaunch.inventory.errors import InventoryError, Problem

KeyPath = tuple[Any, ...]

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAX_NODES = 200_000  # an inventory has hundreds; aliases must not multiply into millions
_LABEL = re.compile(r"^[A-Za-z0-9@_.-]{1,63}$")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Source:
    """Where an inventory came from: its file (as messages name it) and the line of each key path."""

    file: str
    lines: Mapping[KeyPath, int] = field(default_factory=dict)
    labels: Mapping[KeyPath, str] = field(default_factory=dict)
    origin: Path | None = None  # the file's absolute path (relative secrets start at its directory)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its closest recorded ancestor; None if nothing is known."""
        for n in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:n]))
            if line is not None:
                return line
        return None

    def describe(self, path: KeyPath) -> str:
        """Display form of a key path: ``apps[blog].health[0].status`` (list items by name when unique)."""
        out = ""
        for n, part in enumerate(path):
            if isinstance(part, int) and not isinstance(part, bool):
                out += f"[{self.labels.get(tuple(path[: n + 1]), part)}]"
            elif isinstance(part, str) and _PLAIN_KEY.match(part):
                out += f".{part}" if out else part
            else:
                out += f"[{_short(part)}]"
        return out


def _short(value: object, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long for repr
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse(text: str, file: str) -> tuple[Any, Source]:
    """Parse one YAML document. Return (data, Source). Raise InventoryError on any YAML problem."""
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters right away
        try:
            node = loader.get_single_node()
            builder = _Builder(loader, file)
            data = builder.build(node, ()) if node is not None else None
        finally:
            loader.dispose()
    except InventoryError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ": ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise InventoryError(Problem(file, mark.line + 1 if mark else None, "", f"not valid YAML: {what}", "yaml")) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        problem = f"not valid YAML: character {char} is not allowed ({exc.reason})"
        raise InventoryError(Problem(file, line, "", problem, "yaml")) from None
    except yaml.YAMLError as exc:
        raise InventoryError(Problem(file, None, "", f"not valid YAML: {exc}", "yaml")) from None
    except RecursionError:
        raise InventoryError(Problem(file, None, "", "not usable YAML: nested too deeply", "yaml")) from None
    return data, Source(file, builder.lines, builder.labels)


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.lines: dict[KeyPath, int] = {}
        self.labels: dict[KeyPath, str] = {}
        self.count = 0
        self.stack: set[int] = set()

    def fail(self, node: Node, message: str) -> InventoryError:
        return InventoryError(Problem(self.file, node.start_mark.line + 1, "", message, "yaml"))

    def build(self, node: Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise self.fail(node, f"too large: more than {_MAX_NODES} values (aliases expanding?)")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, ScalarNode) or node.tag not in (_MAP_TAG, _SEQ_TAG):
            try:  # scalars, and explicitly tagged collections (!!set, !!omap): PyYAML's own constructors
                return self.loader.construct_object(node, deep=True)
            except yaml.YAMLError:
                raise
            except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp like 2024-02-30
                raise self.fail(node, f"not usable YAML: {node.value if isinstance(node, ScalarNode) else node.tag}: {exc}") from None
        if id(node) in self.stack:
            raise self.fail(node, "not usable YAML: an alias refers to a value that contains it")
        self.stack.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                items = [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
                self._label_items(path, items)
                return items
            assert isinstance(node, MappingNode)
            own = {id(k) for k, _ in node.value}
            self.loader.flatten_mapping(node)  # '<<' merge keys: merged pairs first, own keys may override them
            result: dict[Any, Any] = {}
            first_line: dict[Any, int] = {}
            merged: set[Any] = set()
            for key_node, value_node in node.value:
                key = self.build_key(key_node)
                line = key_node.start_mark.line + 1
                if key in result and key not in merged:
                    raise self.fail(key_node, f"duplicate key {_short(key)} (first at line {first_line[key]})")
                merged.discard(key)
                if id(key_node) not in own:
                    merged.add(key)
                first_line[key] = line
                self.lines[(*path, key)] = line  # the key's line: where a reader looks for "port: ..."
                result[key] = self.build(value_node, (*path, key))
            return result
        finally:
            self.stack.discard(id(node))

    def build_key(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            raise self.fail(node, "a key must be a plain value, not a list or mapping")
        key = self.build(node, ("<key>",))
        try:
            hash(key)
        except TypeError:
            raise self.fail(node, f"key {_short(key)} cannot be used as a key") from None
        return key

    def _label_items(self, path: KeyPath, items: list[Any]) -> None:
        """Name list items by their 'name' key when every such name is unique and plain."""
        names = [item.get("name") if isinstance(item, dict) else None for item in items]
        usable = [n for n in names if isinstance(n, str) and _LABEL.match(n)]
        if len(set(usable)) != len(usable):
            return
        for i, name in enumerate(names):
            if isinstance(name, str) and _LABEL.match(name):
                self.labels[(*path, i)] = name
