"""The inventory: load, validate and resolve one site's description.

    inv = load_site("example")            # or load(path); InventoryError on any problem
    secrets = resolve_all(inv)            # Secret values by reference; InventoryError if any is missing
"""

from relaunch.inventory.errors import InventoryError, Problem, UnknownNameError
from relaunch.inventory.loader import display_name, inventory_path, load, load_site, load_text, source_of
from relaunch.inventory.model import App, Database, Inventory
from relaunch.inventory.secrets import Secret, Secrets, ensure_sandbox_secrets, masked, resolve_all

__all__ = [
    "App",
    "Database",
    "Inventory",
    "InventoryError",
    "Problem",
    "Secret",
    "Secrets",
    "UnknownNameError",
    "display_name",
    "ensure_sandbox_secrets",
    "inventory_path",
    "load",
    "load_site",
    "load_text",
    "masked",
    "resolve_all",
    "source_of",
]
