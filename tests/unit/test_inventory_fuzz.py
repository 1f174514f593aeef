"""The loader never fails with anything but InventoryError, whatever the text or data."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaunch.inventory import Inventory, InventoryError, load_text

EXAMPLE = yaml.safe_load((Path(__file__).resolve().parents[2] / "inventory" / "example.yml").read_text())
# RELAUNCH_FUZZ_EXAMPLES=5000 for a longer hunt; 200 keeps the unit suite quick
SETTINGS = settings(max_examples=int(os.environ.get("RELAUNCH_FUZZ_EXAMPLES", "200")), deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
    st.sampled_from(["native", "sandbox", "compose", "systemd", "env:X", "file:x", "/srv/x", "a.b.test", "@", "A"]),
)
keys = st.one_of(st.text(max_size=12), st.sampled_from(sorted(Inventory.model_fields) + ["name", "port", "runs", "health"]))
data = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=25)


def only_inventory_errors(text: str) -> None:
    try:
        load_text(text, "fuzz.yml")
    except InventoryError as exc:
        assert str(exc).startswith("fuzz.yml")
        assert exc.problems


@SETTINGS
@given(st.text(max_size=300))
def test_load_text_arbitrary_text(text: str) -> None:
    only_inventory_errors(text)


yaml_chars = st.sampled_from(list("abc:-[]{},&*!|>'\"#?@%`\n \t0123456789.<=~")) | st.characters()


@SETTINGS
@given(st.lists(yaml_chars, max_size=120).map("".join))
def test_load_text_yaml_punctuation(text: str) -> None:
    only_inventory_errors(text)


@SETTINGS
@given(data)
def test_load_text_arbitrary_data(value: object) -> None:
    only_inventory_errors(yaml.safe_dump(value))


def mutate(draw: st.DrawFn) -> object:
    doc = copy.deepcopy(EXAMPLE)
    for _ in range(draw(st.integers(1, 3))):
        node: object = doc
        parent: object = None
        key: object = None
        for _depth in range(draw(st.integers(1, 5))):
            if isinstance(node, dict) and node:
                key = draw(st.sampled_from(sorted(node, key=str)))
            elif isinstance(node, list) and node:
                key = draw(st.integers(0, len(node) - 1))
            else:
                break
            parent, node = node, node[key]  # type: ignore[index]
        if parent is None:
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[key] = draw(data)  # type: ignore[index]
        elif action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(data)
    return doc


@SETTINGS
@given(st.composite(mutate)())
def test_load_text_mutated_example(doc: object) -> None:
    only_inventory_errors(yaml.safe_dump(doc, sort_keys=False))
