"""One alert as one JSON POST: the body and the request (Python 3 stdlib only).

Used by :mod:`relaunch.alerts` on the operator's machine and copied beside the backup runner
on the production host (``relaunch_webhook.py``), which posts a failed run the minute it
fails. One body format for both: ntfy's JSON publish fields (``title``, ``message``,
``priority`` 1-5, ``tags``); with a topic exactly those plus ``topic``, else also ``event``,
``site``, ``details`` and the sender's version.

A URL may hold a secret: only :func:`shown` (scheme, host and port) ever goes into a message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

#: Seconds one POST may take.
TIMEOUT = 10.0
#: ntfy priorities: 3 default, 4 high, 5 max.
PRIORITY = {"drill_failed": 4, "objective_missed": 4, "backup_failed": 5, "backup_stale": 4}


def body(event: str, site: str, title: str, message: str, details: dict[str, Any], *,
         topic: str | None, version: str) -> dict[str, Any]:
    """The JSON body of one alert (see the module's doc)."""
    out: dict[str, Any] = {"title": title, "message": message, "priority": PRIORITY.get(event, 3),
                           "tags": ["warning", "relaunch", event]}
    if topic:
        return {"topic": topic, **out}
    return {**out, "event": event, "site": site, "details": details, "relaunch": version}


def shown(url: str) -> str:
    """What of ``url`` may be said: its scheme, host and port."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{'' if parts.port is None else f':{parts.port}'}"


def post(url: str, payload: dict[str, Any], *, token: str | None = None, version: str = "",
         timeout: float = TIMEOUT) -> tuple[bool, int | None, str | None]:
    """POST ``payload`` as JSON; return (ok, HTTP status, why not). Never raises for a webhook that fails."""
    headers = {"Content-Type": "application/json", "User-Agent": f"relaunch/{version}".rstrip("/")}
    if token:
        headers["Authorization"] = "Bearer " + token
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return False, exc.code, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc)).replace(url, shown(url))  # "unknown url type: '<url>'"
        return False, None, f"{type(exc).__name__}: {reason}"[:300]
    return 200 <= status < 300, status, None if status < 300 else f"HTTP {status}"
