"""Fault knobs for tests: make the simulator answer 429 or 500, or break Droplet creates.

Set through the admin endpoint ``POST /_sandbox/faults``; held in memory by one server.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

#: Droplet-create faults: the create action errors, or the Droplet never becomes active.
CREATE_FAULTS = ("create_error", "never_active")


class FaultSpecError(ValueError):
    """A fault description is malformed; ``field`` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class ResponseFault:
    """Answer the next ``count`` matching /v2 requests with ``status`` instead of serving them."""

    status: int
    count: int
    method: str | None = None
    path_prefix: str | None = None
    retry_after: int = 1

    def matches(self, method: str, path: str) -> bool:
        """Tell whether a request (method, path without query) is one this fault targets."""
        if self.method and self.method.upper() != method.upper():
            return False
        if self.path_prefix and not path.startswith(self.path_prefix):
            return False
        return True


@dataclass
class Faults:
    """The active faults of one server. Thread-safe."""

    responses: list[ResponseFault] = field(default_factory=list)
    creates: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, spec: dict[str, Any]) -> None:
        """Add the faults described by ``spec`` (the admin endpoint's JSON body).

        Keys: ``status`` (429 or 500) with ``count`` (default 1), optional ``method``,
        ``path_prefix`` and ``retry_after`` (seconds, 429 only, default 1); and/or
        ``droplet_create``: ``"create_error"`` or ``"never_active"`` (applies to the next
        Droplet created; ``create_count`` repeats it). Raise FaultSpecError if malformed.
        """
        if not isinstance(spec, dict):
            raise FaultSpecError("body", "the fault description must be a JSON object")
        new_responses: list[ResponseFault] = []
        new_creates: list[str] = []
        known = {"status", "count", "method", "path_prefix", "retry_after", "droplet_create", "create_count"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise FaultSpecError(unknown[0], f"unknown fault key {unknown[0]!r}")
        if "status" in spec:
            status = spec["status"]
            if status not in (429, 500):
                raise FaultSpecError("status", "status must be 429 or 500")
            count = _positive_int(spec, "count", 1)
            retry_after = _positive_int(spec, "retry_after", 1)
            method = spec.get("method")
            prefix = spec.get("path_prefix")
            for name, value in (("method", method), ("path_prefix", prefix)):
                if value is not None and not isinstance(value, str):
                    raise FaultSpecError(name, f"{name} must be a string")
            new_responses.append(ResponseFault(status, count, method, prefix, retry_after))
        if "droplet_create" in spec:
            kind = spec["droplet_create"]
            if kind not in CREATE_FAULTS:
                raise FaultSpecError("droplet_create", f"droplet_create must be one of {', '.join(CREATE_FAULTS)}")
            new_creates.extend([kind] * _positive_int(spec, "create_count", 1))
        if not new_responses and not new_creates:
            raise FaultSpecError("body", "give 'status' or 'droplet_create'")
        with self._lock:
            self.responses.extend(new_responses)
            self.creates.extend(new_creates)

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self.responses.clear()
            self.creates.clear()

    def take_response(self, method: str, path: str) -> ResponseFault | None:
        """Return the first fault matching this request and use one of its count, or None."""
        with self._lock:
            for fault in self.responses:
                if fault.matches(method, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self.responses.remove(fault)
                    return fault
        return None

    def take_create(self) -> str | None:
        """Return the fault for the Droplet being created now ("create_error", "never_active"), or None."""
        with self._lock:
            return self.creates.pop(0) if self.creates else None

    def describe(self) -> dict[str, Any]:
        """Return the active faults as JSON-able data."""
        with self._lock:
            return {
                "responses": [dict(vars(f)) for f in self.responses],
                "droplet_create": list(self.creates),
            }


def _positive_int(spec: dict[str, Any], key: str, default: int) -> int:
    value = spec.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise FaultSpecError(key, f"{key} must be a positive integer")
    return value
