"""The inventory: load, validate and resolve one site's description."""
