"""A DigitalOcean-compatible API on loopback (a site whose ``provider.kind`` is ``sandbox``).

The sandbox (``relaunch.sandbox``) runs such an API in the background and describes it in
its state directory: ``api.json`` (pid, port, DNS port) and the login key ``id_ed25519``.
The product finds it here, from that description alone, and never imports the sandbox:
to the pipeline it is one more cloud behind the same adapter.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import requests

from relaunch.errors import RelaunchError

DEFAULT_TOKEN = "sandbox"


def state_dir() -> Path:
    """The local cloud's state directory (``RELAUNCH_SANDBOX_DIR``, else ~/.local/state/relaunch/sandbox)."""
    env = os.environ.get("RELAUNCH_SANDBOX_DIR")
    base = Path(env) if env else Path.home() / ".local" / "state" / "relaunch" / "sandbox"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base


def token() -> str:
    """The token the local API accepts (``RELAUNCH_SANDBOX_TOKEN``, else ``sandbox``)."""
    return os.environ.get("RELAUNCH_SANDBOX_TOKEN") or DEFAULT_TOKEN


def login_key_path() -> Path:
    """The key relaunch logs in to the local cloud's Droplets with (made on first use, 0600)."""
    return state_dir() / "id_ed25519"


def info_path(state: Path) -> Path:
    return state / "api.json"


@dataclass(frozen=True)
class LocalApi:
    """A running local API: its process, port and state directory."""

    pid: int
    port: int
    state_dir: Path
    dns_port: int | None = None
    """The zones' authoritative DNS server on 127.0.0.1 (UDP and TCP); None for an API
    started before the sandbox answered DNS."""

    @property
    def url(self) -> str:
        """The endpoint for python-digitalocean (``DIGITALOCEAN_END_POINT``), trailing /v2/ included."""
        return f"http://127.0.0.1:{self.port}/v2/"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "api.log"


def running(state: Path | None = None) -> LocalApi | None:
    """The running API described in ``state`` (default :func:`state_dir`), or None."""
    state = state or state_dir()
    try:
        info = json.loads(info_path(state).read_text())
        pid, port = int(info["pid"]), int(info["port"])
        dns_port = int(info["dns_port"]) if info.get("dns_port") is not None else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not alive(pid):
        return None
    api = LocalApi(pid=pid, port=port, state_dir=state, dns_port=dns_port)
    return api if healthy(api) else None


def open_local_cloud(site: str):
    """The adapter on the running local API and its DNS port; RelaunchError if it is not running."""
    from relaunch.cloud.client import Cloud

    api = running()
    if api is None:
        raise RelaunchError(f"site {site!r} lives in the sandbox, which is not running (fab sandbox-up)")
    return Cloud(token=token(), endpoint=api.url, poll_interval=0.2, poll_max_interval=2.0), api.dns_port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def healthy(api: LocalApi) -> bool:
    try:
        resp = requests.get(f"http://127.0.0.1:{api.port}/_sandbox/health",
                            headers={"Authorization": f"Bearer {token()}"}, timeout=2)
        return resp.status_code == 200
    except requests.RequestException:
        return False
