"""relaunch: rebuild a self-hosted server after a disaster, and rehearse it."""

__version__ = "0.1.0"
