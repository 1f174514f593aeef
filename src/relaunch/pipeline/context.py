"""What the steps of one run share: the site, its secrets, the cloud, the journal, open connections."""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric import Connection

from relaunch.cloud import Cloud
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.inventory.secrets import Secrets
from relaunch.pipeline.events import Event, Progress, quiet
from relaunch.pipeline.journal import Journal
from relaunch.provision import open_host
from relaunch.remote import connect
from relaunch.state import HostRecord, load_hosts, make_private_dirs, write_json_atomic

log = logging.getLogger(__name__)

#: Seconds a live-looking SSH transport has to open a channel before :meth:`RunContext.conn_lost` calls it lost.
CONN_PROBE_TIMEOUT = 10.0


@dataclass
class RunContext:
    """One run's shared things. ``state`` (the journal's) holds what earlier steps produced.

    Connections are opened on first use and closed by :meth:`close`. ``options`` are the
    run's choices (source, backup id, region, size, switch or not ...), journaled with it.
    """

    inv: Inventory
    secrets: Secrets
    cloud: Cloud
    key_path: Path
    journal: Journal
    options: dict[str, Any]
    dns_port: int | None = None
    progress: Progress = quiet
    #: In-process results of steps for the caller (a bootstrap's result, a health report): not journaled.
    results: dict[str, Any] = field(default_factory=dict)
    _conns: dict[str, Connection] = field(default_factory=dict)
    #: Artifacts of a run whose journal is kept in memory only (no run directory to write them to).
    _artifacts: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> dict[str, Any]:
        return self.journal.state

    def mask(self, text: str) -> str:
        return self.secrets.mask(text)

    def say(self, step: str, message: str) -> None:
        log.info("%s: %s", step, message)
        self.progress(Event("info", step, message))

    def bytes(self, step: str, what: str, done: int, total: int | None) -> None:
        self.progress(Event("bytes", step, done=done, total=total, what=what))

    def started(self) -> datetime:
        """When the run started (its first attempt)."""
        return datetime.fromisoformat(self.journal.data["started_at"].replace("Z", "+00:00"))

    # --- the run's own files (listings too large for the journal) --------------------

    def artifact_path(self, name: str) -> Path:
        """The artifact's file in the run's directory. Raise RelaunchError for an in-memory journal (it has none)."""
        if self.journal.path is None:
            raise RelaunchError(f"run {self.journal.id} keeps its journal in memory: artifact {name!r} has no file")
        directory = self.journal.path.parent / f"{self.journal.kind}-{self.journal.id}.d"
        make_private_dirs(directory)
        return directory / name

    def save_artifact(self, name: str, data: Any) -> None:
        """Keep ``data`` (JSON) for later steps: in the run's directory, or in memory for an in-memory journal."""
        if self.journal.path is None:
            self._artifacts[name] = json.loads(json.dumps(data))  # the same JSON round trip a file gives
            return
        write_json_atomic(self.artifact_path(name), data)

    def load_artifact(self, name: str) -> Any:
        """What :meth:`save_artifact` kept under ``name``, or None."""
        if self.journal.path is None:
            return self._artifacts.get(name)
        path = self.artifact_path(name)
        return json.loads(path.read_text()) if path.exists() else None

    # --- hosts ----------------------------------------------------------------------

    def new_record(self) -> HostRecord:
        name = self.state.get("new_name")
        record = load_hosts(self.inv.site).get(name or "")
        if record is None or not record.ipv4:
            raise RelaunchError(f"the new host {name!r} of this run has no complete record in hosts.json")
        return record

    def new_conn(self, timeout: float = 180) -> Connection:
        """A pinned connection to the run's new host (opened once)."""
        conn = self._conns.get("new")
        if conn is None or not conn.is_connected:
            conn = open_host(self.new_record(), self.key_path, timeout=timeout)
            self._conns["new"] = conn
        return conn

    def old_conn(self, timeout: float = 20) -> Connection:
        """A pinned connection to the site's current production host (opened once). Raise if it does not answer."""
        conn = self._conns.get("old")
        if conn is None or not conn.is_connected:
            old = self.state.get("old") or {}
            if not old.get("address"):
                raise RelaunchError(f"site {self.inv.site!r}: relaunch knows no production host to reach")
            conn = connect(old["address"], old["host_key"], self.key_path, user=old.get("user", "root"),
                           connect_timeout=min(timeout, 15))
            from relaunch.remote import wait_for_ssh

            wait_for_ssh(conn, timeout=timeout)
            self._conns["old"] = conn
        return conn

    def transport(self, which: str) -> Any:
        """The SSH transport the connection ``which`` runs on now (None: never opened, or closed).

        An attempt keeps it to ask :meth:`conn_lost` later whether its connection dropped in between.
        """
        conn = self._conns.get(which)
        return conn.client.get_transport() if conn is not None and conn.client is not None else None

    def conn_lost(self, which: str, since: Any = None) -> bool:
        """Whether the connection ``which`` was opened and has dropped (sessions killed, host gone).

        ``since``: the transport an attempt began with (:meth:`transport`). The connection
        counts as dropped when it runs on another one now: a command of a parallel job reopens
        a dropped connection on the same object (``Connection.open``), so by the time a failed
        job asks, the connection may look alive again.

        A transport that still looks active is asked: a new channel must open on it within
        :data:`CONN_PROBE_TIMEOUT` seconds. When sshd's session processes are killed, the running
        command comes back failed before paramiko's transport thread has read the closed socket,
        so ``is_active()`` alone would call a dropped connection a live one.
        """
        if which not in self._conns:
            return since is not None
        transport = self.transport(which)
        if transport is None or not transport.is_active():
            return True
        if since is not None and transport is not since:
            return True
        try:
            channel = transport.open_session(timeout=CONN_PROBE_TIMEOUT)
        except Exception:  # noqa: BLE001 - any failure to open a channel means the connection is gone
            return True
        with contextlib.suppress(Exception):
            channel.close()
        return False

    @property
    def old_hand_built(self) -> bool:
        """Whether the old host was set up by hand (adopted): its apps' ``control`` says how to stop and start them."""
        return bool((self.state.get("old") or {}).get("adopted"))

    def drop_conn(self, which: str) -> None:
        conn = self._conns.pop(which, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        for which in list(self._conns):
            self.drop_conn(which)
