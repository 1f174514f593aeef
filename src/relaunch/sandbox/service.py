"""Run the sandbox API as a background service for the tasks: pid file, log, idempotent start.

The token reaches the child through its environment (``RELAUNCH_SANDBOX_TOKEN``), never
its arguments, so it does not show in ``ps``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from relaunch.cloud.local import LocalApi, alive, healthy, info_path, running, token
from relaunch.errors import RelaunchError
from relaunch.poll import attempts
from relaunch.sandbox import state_dir as default_state_dir

log = logging.getLogger(__name__)

#: A running sandbox API, as the product reads it (relaunch.cloud.local): one description, two readers.
Service = LocalApi
sandbox_token = token
_info_path = info_path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_dns_port(avoid: int, attempts: int = 20) -> int:
    """Return a port free on 127.0.0.1 for both UDP and TCP (the child binds it right after)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            if port == avoid:
                continue
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RelaunchError("found no port free for both UDP and TCP on 127.0.0.1 for the sandbox DNS")


def start(
    state: Path | None = None,
    port: int | None = None,
    timeout: float = 900,
    network: str | None = None,
    dns_port: int | None = None,
) -> Service:
    """Start the API in the background unless it runs already; return it once it answers.

    Its zones' DNS server listens on 127.0.0.1:``dns_port`` (a free port if None, else
    ``RELAUNCH_SANDBOX_DNS_PORT`` if set); ``api.json`` in the state directory records it and
    ``running()`` reads it back into ``Service.dns_port``.

    The first start may build the base image (minutes); ``timeout`` bounds the wait.
    Raise RelaunchError with the tail of its log if it dies or does not answer in time.
    """
    state = state or default_state_dir()
    current = running(state)
    if current:
        return current
    port = port or int(os.environ.get("RELAUNCH_SANDBOX_PORT") or 0) or _free_port()
    dns_port = dns_port or int(os.environ.get("RELAUNCH_SANDBOX_DNS_PORT") or 0) or _free_dns_port(avoid=port)
    log_path = state / "api.log"
    extra = ["--network", network] if network else []
    env = dict(os.environ, RELAUNCH_SANDBOX_TOKEN=sandbox_token())
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "relaunch.sandbox", "api", "--port", str(port), "--dns-port", str(dns_port),
             "--state-dir", str(state), *extra],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in the terminal must not kill the cloud
        )
    _info_path(state).write_text(json.dumps({"pid": proc.pid, "port": port, "dns_port": dns_port}))
    service = Service(pid=proc.pid, port=port, state_dir=state, dns_port=dns_port)
    for _ in attempts(timeout, first=0.1, cap=1.0):
        if proc.poll() is not None:
            raise RelaunchError(f"the sandbox API exited ({proc.returncode}); its log {log_path} ends:\n{_tail(log_path)}")
        if healthy(service):
            log.info("sandbox API on %s (pid %d)", service.url, proc.pid)
            return service
    stop(state)
    raise RelaunchError(f"the sandbox API did not answer within {timeout:.0f} s; its log {log_path} ends:\n{_tail(log_path)}")


def stop(state: Path | None = None, timeout: float = 30) -> bool:
    """Stop the background API of this state directory; return whether one was running."""
    state = state or default_state_dir()
    info_path = _info_path(state)
    try:
        pid = int(json.loads(info_path.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return False
    was_running = alive(pid)
    if was_running:
        os.kill(pid, signal.SIGTERM)
        for _ in attempts(timeout, first=0.1, factor=1.0):
            if not alive(pid):
                break
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    info_path.unlink(missing_ok=True)
    return was_running


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
