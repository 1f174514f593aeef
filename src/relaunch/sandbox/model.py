"""Shared pieces of the simulator: the API error type, timestamps, who owns running work."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer: HTTP ``status`` with DigitalOcean's ``{"id", "message"}`` body."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message


def not_found() -> ApiError:
    return ApiError(404, "not_found", "The resource you were accessing could not be found.")


def unprocessable(message: str) -> ApiError:
    """A 422 for bad input; ``message`` names the field, as DigitalOcean's do."""
    return ApiError(422, "unprocessable_entity", message)


def now_iso() -> str:
    """Return the current UTC time as DigitalOcean writes it (``2024-01-01T00:00:00Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """Return a stored document without its private ``_`` part."""
    return {k: v for k, v in doc.items() if k != "_"}


# Work (an action's worker thread) is owned by one simulator instance in one process. After
# a crash or restart, a new instance takes over work whose owner is gone.
_live_instances: set[str] = set()
_live_lock = threading.Lock()


def new_owner() -> dict[str, Any]:
    """Register and return the owner token of a new simulator instance in this process."""
    token = {"pid": os.getpid(), "instance": uuid.uuid4().hex}
    with _live_lock:
        _live_instances.add(token["instance"])
    return token


def retire_owner(owner: dict[str, Any]) -> None:
    """Mark an instance of this process as gone (its unfinished work may be taken over)."""
    with _live_lock:
        _live_instances.discard(owner["instance"])


def owner_alive(owner: dict[str, Any] | None) -> bool:
    """Tell whether the instance that owns some work may still be doing it."""
    if not owner:
        return False
    if owner.get("pid") == os.getpid():
        with _live_lock:
            return owner.get("instance") in _live_instances
    try:
        os.kill(int(owner["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError, TypeError):
        return False
    except PermissionError:
        return True
    return True


class Workers:
    """Background threads doing the slow work of actions; ``join`` waits for them."""

    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def spawn(self, name: str, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` in a daemon thread; log (never raise) what it raises."""

        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("worker %s failed", name)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"sandbox-{name}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every worker; tell whether all ended."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._threads)
            if not threads:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            threads[0].join(remaining)
