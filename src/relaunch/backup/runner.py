#!/usr/bin/python3
"""relaunch's backup runner: the script that runs ON the production host (Python 3 stdlib only).

Why a self-contained script rendered onto the host, and not relaunch itself installed there:
the production host is the machine whose failure relaunch exists for. It should need
nothing but Debian's ``python3`` (already there for cloud-init), no virtualenv to keep in
step with the control machine and no third-party packages that an upgrade can break. Every
decision that needs the inventory (which databases, how to dump each, which trees, the
retention policy, where the off-host store is) is made on the control machine by relaunch
and written to one JSON config (``/etc/relaunch/backup.json``, no secret in it: secrets
are referenced by the path of a 0600 file). The dump commands in it are exact argument
lists made by ``relaunch.databases``, so this script only executes, hashes and records.
The retention policy is relaunch's own ``retention.py``, copied beside this script.

Commands (``backup.py [--config PATH] COMMAND``):

- ``run`` (default): one backup. Takes ``flock`` on the lock file; when another run holds
  it, prints "another backup is already running" and exits 75 (EX_TEMPFAIL), which the
  unit lists in SuccessExitStatus=: an overlapping start is not a failure of the schedule,
  but a caller that asked for a backup learns it got none. Records the run in the status
  file as ``running`` before anything else, then dumps each database while streaming it
  to disk (sha256 computed on the way), archives each app's file trees (tar.gz), reads
  the image digests the compose apps run (``deploy``), writes ``manifest.json``, all in
  ``ROOT/.tmp-ID``, then renames it to ``ROOT/ID`` (no half backup is ever visible under
  its ID). Then the off-host copy: every local backup not yet off-host is uploaded, oldest
  first (restic backup tagged ``relaunch``, ``site:<site>`` and the ID, ``--host <site>``).
  This host never forgets or prunes off-host (its store key is append-only where relaunch
  authorized it): the status says how many snapshots the policy would forget, and the
  operator does it with other credentials (``fab backup --prune``). Then local
  retention: the policy, and with an off-host store a cap of ``local_keep_last``, remove
  only backups already off-host; one not yet off-host is kept unless the filesystem's
  free space is below the floor (``min_free_percent`` / ``min_free_bytes``), which the run's
  status entry states. Exits 0 only if every step succeeded; otherwise non-zero with the
  failed step named on stderr and in the status file.
- ``verify [ID] [--offsite]``: sha256 and size of every artifact of backup ID (default the
  newest) against its manifest; ``--offsite`` adds ``restic check``. Prints JSON.
- ``list``: local backups (with verification results) and this site's off-host snapshots, as JSON.
- ``init-offsite``: create the restic repository unless it exists.

Every subprocess runs in its own process group with its stderr drained in a thread (a dump
that writes a lot to stderr cannot block on a full pipe) and a deadline (``timeouts`` in
the config: ``dump`` for dumps, fingerprints and restores, ``command`` for short ones,
``restic``, ``docker``); at the deadline its group gets SIGTERM, then SIGKILL. SIGTERM
(systemd stopping the unit, or its TimeoutStartSec= passing) and SIGINT stop every child
and the run, which still records its end. A run that could not record its end (SIGKILL,
power loss) stays ``running`` in the status file until the next run marks it ``killed``.
Every file the runner writes is 0600 (umask 077), however it was started.

Temporary files never land in a tree that is archived: the run's work directory is
``ROOT/.work`` (emptied at the start of each run, under the lock), handed to every child as
``RELAUNCH_WORK_DIR`` (the SQLite dump writes its copy there). The archive also leaves out
anything named like a relaunch temporary file (``is_relaunch_temporary``) that another
relaunch command left behind in an app's tree.

Logs go to stdout/stderr (the journal under systemd). Secret values never reach argv,
the environment of anything but restic itself (RESTIC_PASSWORD_FILE is a path), or logs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple

try:  # beside this script on the host; inside the package when imported by tests
    from relaunch_retention import Policy, plan  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on how it is loaded
    from relaunch.backup.retention import Policy, plan
try:
    import relaunch_webhook as webhook  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on how it is loaded
    from relaunch import webhook

DEFAULT_CONFIG = "/etc/relaunch/backup.json"
EX_ALREADY_RUNNING = 75
ID_FORMAT = "%Y%m%dT%H%M%SZ"
MANIFEST = "manifest.json"
STATUS_KEEP = 50
CHUNK = 1024 * 1024
MANIFEST_FORMAT = 1
#: The run's own temporary files, under the backup root (never under an archived tree).
WORK_DIR_NAME = ".work"
#: The environment variable that tells a child (the SQLite dump) where its temporary files go.
WORK_DIR_ENV = "RELAUNCH_WORK_DIR"
#: Seconds a subprocess may run, by kind (the config's ``timeouts`` overrides each).
DEFAULT_TIMEOUTS = {"dump": 3000.0, "command": 600.0, "restic": 3000.0, "docker": 120.0}
#: Seconds between SIGTERM and SIGKILL for a child past its deadline.
STOP_GRACE = 5.0
#: Bytes of a child's stderr kept for messages.
TAIL = 4000
#: Without ``min_free_percent`` in the config: the free space (percent of the filesystem)
#: below which even backups that are not off-host yet are removed, oldest first.
DEFAULT_MIN_FREE_PERCENT = 10.0
#: The tag that scopes a site's snapshots in a repository other sites may share.
SITE_TAG_PREFIX = "site:"


class StepFailed(Exception):
    """A named step of a run failed."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class Stopped(Exception):
    """The run was told to stop (SIGTERM, SIGINT) while it ran."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def log(message: str) -> None:
    print(message, flush=True)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def parse_id(backup_id: str) -> dt.datetime | None:
    """The time of a backup ID (``20260101T000000Z``, maybe with a ``-N`` suffix), or None if it is not one."""
    try:
        return dt.datetime.strptime(backup_id.split("-")[0], ID_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def is_relaunch_temporary(name: str) -> bool:
    """Whether a file name is one of relaunch's temporary files (never archived).

    ``.<db>.relaunch-*`` (SQLite copies and restores of older relaunch versions, and
    restores, which must sit beside their target to be renamed into place), ``*.relaunch-new``
    (``relaunch.upload``), ``.relaunch-*`` (anything newer).
    """
    return name.endswith(".relaunch-new") or (name.startswith(".") and ".relaunch-" in name)


class HashingWriter:
    """A binary file that hashes (sha256) and counts what is written to it."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.fh.flush()


def read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def write_json(path: Path, data, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically, mode ``mode`` whatever the umask or a stale temp file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), mode)  # O_CREAT's mode does not apply to a file that was already there
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def sha256_file(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def timeouts(config: dict) -> dict[str, float]:
    return {**DEFAULT_TIMEOUTS, **{k: float(v) for k, v in (config.get("timeouts") or {}).items()}}


def work_dir(config: dict) -> Path:
    return Path(config["root"]) / WORK_DIR_NAME


# --- children --------------------------------------------------------------------------

# The live children of this run, so that a SIGTERM stops them all. An RLock: the signal
# handler runs in the main thread, maybe while that thread holds the lock in spawn().
_children: set[subprocess.Popen] = set()
_children_lock = threading.RLock()
_stopping: list[str] = []  # non-empty once the run is stopping: no new child starts


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process(proc: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left of it after ``grace`` seconds."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc, signal.SIGKILL)  # also what the leader left behind holding our pipes


def stop_all(reason: str) -> None:
    """Stop every child now (SIGKILL: the run is being abandoned) and refuse new ones."""
    with _children_lock:
        _stopping.append(reason)
        procs = list(_children)
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)


def check_stopping(step: str) -> None:
    if _stopping:
        raise StepFailed(step, f"stopped ({_stopping[0]})")


class Child:
    """One subprocess of a run: its own process group, stderr drained in a thread (its tail kept), a deadline.

    At the deadline the process group gets SIGTERM, then SIGKILL; ``timed_out`` says so.
    """

    def __init__(self, step: str, argv: list[str], env: dict[str, str], timeout: float, *,
                 stdin: bool = False, stdout: bool = True, cwd: str | None = None) -> None:
        self.step = step
        self.argv = argv
        self.timeout = timeout
        self.timed_out = False
        self._err: deque[bytes] = deque()
        self._err_size = 0
        with _children_lock:
            check_stopping(step)
            try:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                    stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True,
                )
            except OSError as exc:
                raise StepFailed(step, f"cannot start {argv[0]}: {exc.strerror}") from None
            _children.add(self.proc)
        self._drain = threading.Thread(target=self._read_stderr, name=f"stderr {step}", daemon=True)
        self._drain.start()
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            while chunk := self.proc.stderr.read1(65536):
                self._err.append(chunk)
                self._err_size += len(chunk)
                while self._err_size - len(self._err[0]) >= TAIL:
                    self._err_size -= len(self._err.popleft())
        except (OSError, ValueError):
            return

    def _expire(self) -> None:
        self.timed_out = True
        log(f"{self.step}: {self.argv[0]} still running after {self.timeout:.0f} s: stopping it")
        stop_process(self.proc)

    def stderr_tail(self) -> str:
        return b"".join(self._err)[-TAIL:].decode(errors="replace").strip()

    def finish(self, wait: float | None = None) -> int:
        """Wait for the end (at most ``wait`` s, then stop it; the deadline applies either way); return the exit status."""
        if wait is not None:
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
        code = self.proc.wait()
        self._timer.cancel()
        self._drain.join(STOP_GRACE)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        with _children_lock:
            _children.discard(self.proc)
        return code

    def abandon(self) -> None:
        """Stop the child after a failure on our side (a full disk, say) and reap it."""
        stop_process(self.proc, grace=1.0)
        self.finish()

    def failure(self, code: int) -> StepFailed:
        tail = self.stderr_tail()[-1000:]
        if self.timed_out:
            return StepFailed(self.step, f"{self.argv[0]} did not finish within {self.timeout:.0f} s (the config's "
                                         f"timeouts) and was stopped" + (f": {tail}" if tail else ""))
        if _stopping and code < 0:
            return StepFailed(self.step, f"stopped ({_stopping[0]})")
        return StepFailed(self.step, f"exit status {code}: {tail}")


class Done(NamedTuple):
    code: int
    stdout: bytes
    stderr: str


def run_command(step: str, argv: list[str], env: dict[str, str], timeout: float, *,
                cwd: str | None = None, check: bool = True) -> Done:
    """Run a command to its end within ``timeout`` s; return its exit status, stdout and stderr tail.

    Raise StepFailed if it overran its time, or (with ``check``) exited non-zero.
    """
    child = Child(step, argv, env, timeout, cwd=cwd)
    try:
        assert child.proc.stdout is not None
        out = child.proc.stdout.read()
    except BaseException:
        child.abandon()
        raise
    code = child.finish()
    if child.timed_out or (check and code != 0):
        raise child.failure(code)
    return Done(code, out, child.stderr_tail())


# --- one backup ------------------------------------------------------------------------


def child_env(spec: dict, config: dict) -> dict[str, str]:
    """The environment of a dump command: ours, the work directory, values read from (0600) files (never logged)."""
    env = dict(os.environ)
    env[WORK_DIR_ENV] = str(work_dir(config))
    for key, path in (spec.get("env_from_files") or {}).items():
        env[key] = Path(path).read_text().rstrip("\r\n")
    return env


class SnapshotSession:
    """A database session that holds a snapshot open while the dump and the fingerprint read it.

    ``spec``: ``session_argv`` (a client reading SQL on stdin), ``send`` (the SQL that
    starts the transaction and prints ``expect`` + "<id> <time>"), ``expect``. The snapshot
    lives until the session's stdin closes, at most ``timeout`` seconds.
    """

    def __init__(self, spec: dict, env: dict[str, str], step: str, timeout: float) -> None:
        self.step = step
        self.child = Child(step, spec["session_argv"], env, timeout, stdin=True)
        proc = self.child.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(spec["send"].encode())
            proc.stdin.flush()
            for raw in proc.stdout:  # bounded: at the deadline the session is stopped and this ends
                line = raw.decode(errors="replace").strip()
                if line.startswith(spec["expect"]):
                    self.id, _, self.taken_at = line[len(spec["expect"]):].partition(" ")
                    return
        except BrokenPipeError:
            pass
        except BaseException:
            self.child.abandon()
            raise
        code = self.close()
        raise StepFailed(step, f"the snapshot session ended without a snapshot (exit {code}): {self.child.stderr_tail()[-1000:]}")

    def close(self) -> int:
        """End the session (its stdin closes: the transaction ends); return its exit status."""
        try:
            if self.child.proc.stdin is not None:
                self.child.proc.stdin.close()
        except OSError:
            pass
        return self.child.finish(wait=60)


def drop_empty_side_files(path: Path) -> None:
    """Remove the empty ``-wal``/``-shm`` a read-only open of an SQLite copy leaves beside it (never a non-empty WAL)."""
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if wal.exists() and wal.stat().st_size == 0:
        wal.unlink()
        if shm.exists():
            shm.unlink()
    elif not wal.exists() and shm.exists():
        shm.unlink()


def substitute(argv: list[str], old: str | None, new: str) -> list[str]:
    """``argv`` with every occurrence of the stand-in ``old`` replaced (it may sit inside an argument: SQL, --snapshot=)."""
    return [a.replace(old, new) if old else a for a in argv]


class ScratchStream:
    """The dump fed, as it is written, into a restore into the scratch database (MariaDB's fingerprint).

    The restore reads what the dump writes while the dump runs, so the fingerprint costs
    the longer of the two instead of their sum. ``spec["scratch_restore"]["stream_argv"]``
    is the scratch database's client reading SQL on stdin. The scratch database is dropped
    and created first, and always dropped after; a restore that fails (or stops reading)
    fails the backup with its own error once the dump has ended.
    """

    def __init__(self, spec: dict, env: dict[str, str], limits: dict[str, float]) -> None:
        self.scratch = spec["scratch_restore"]
        self.step = f"fingerprint {spec['name']}"
        self.env, self.limits = env, limits
        log(f"{self.step}: restoring the dump into scratch database {self.scratch['database']} as it is written")
        self._drop()
        try:
            run_command(f"{self.step} (create scratch database)", self.scratch["create_argv"], env, limits["command"])
            self.child = Child(f"{self.step} (restore into scratch database)", self.scratch["stream_argv"], env,
                               limits["dump"], stdin=True, stdout=False)
        except BaseException:
            self._drop_after_failure()
            raise
        self.stopped_reading = False

    def _drop(self) -> None:
        run_command(f"{self.step} (drop scratch database)", self.scratch["drop_argv"], self.env, self.limits["command"])

    def _drop_after_failure(self) -> None:
        if _stopping:
            return
        try:
            self._drop()
        except StepFailed as exc:  # the first failure is the one reported; this one is logged
            log(f"{exc.step}: {exc.message}")

    def write(self, chunk: bytes) -> None:
        if self.stopped_reading:
            return
        assert self.child.proc.stdin is not None
        try:
            self.child.proc.stdin.write(chunk)
        except (BrokenPipeError, ValueError):  # it failed: its exit status says why, after the dump
            self.stopped_reading = True

    def abandon(self) -> None:
        """The dump failed: stop the restore, drop the scratch database."""
        self.child.abandon()
        self._drop_after_failure()

    def finish(self, spec: dict) -> dict:
        """The dump has ended: let the restore finish, fingerprint the scratch database, drop it; return the fingerprint."""
        try:
            try:
                if self.child.proc.stdin is not None:
                    self.child.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            code = self.child.finish()
            if code != 0 or self.child.timed_out:
                raise self.child.failure(code)
            fp = fingerprint(spec, self.scratch["fingerprint_argv"], self.env, self.limits["dump"])
        except BaseException:
            self._drop_after_failure()
            raise
        self._drop()
        return fp


class Unpaired(Exception):
    """Writes could not be paused for a paired fingerprint (the reason); nothing is left locked."""


def sql_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class PairedPause:
    """MariaDB/MySQL: writes paused while the fingerprint's and the dump's snapshots start (``spec["paired"]``).

    :meth:`start` lists the database's base tables, locks them all ``READ`` in one session
    (writers wait, readers do not), starts the fingerprint and waits for its snapshot;
    it raises :class:`Unpaired` with the reason, everything released, when it cannot (a
    table not InnoDB, the lock not had within ``lock_wait_s``). The dump starts next; its
    output goes through :meth:`seen`, which ends the pause once a line the dump writes
    only inside its transaction has passed (``dump_markers``). The dump's end ends it too.
    A pause that reaches ``hold_max_s`` is ended by a timer and ``expired`` is set: the
    dump may have started its snapshot after writes resumed, so the fingerprint is dropped
    and the caller fingerprints the dump the scratch way. See
    ``relaunch.databases.mariadb.PairedCommands``.
    """

    def __init__(self, spec: dict, env: dict[str, str], limits: dict[str, float]) -> None:
        self.cfg = spec["paired"]
        self.step = f"fingerprint {spec['name']}"
        self.env, self.limits = env, limits
        self.markers = [m.encode() for m in self.cfg["dump_markers"]]
        self.longest = max(len(m) for m in self.markers)
        self.holder: Child | None = None
        self.fp: Child | None = None
        self.taken_at: str | None = None
        self.paused_at: float | None = None
        self.paused_s: float | None = None
        self.expired = False
        self._tail = b""
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._rest: list[str] = []
        self._reader: threading.Thread | None = None

    def _send(self, sql: str) -> None:
        assert self.holder is not None and self.holder.proc.stdin is not None
        try:
            self.holder.proc.stdin.write(sql.encode())
            self.holder.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # it ended (or was reaped, its pipes closed): reading its output says why

    def _until(self, child: Child, prefix: str, seconds: float, what: str) -> list[str]:
        """Lines of ``child``'s stdout up to the first starting with ``prefix``; Unpaired at EOF or after ``seconds``."""
        assert child.proc.stdout is not None
        late = threading.Event()

        def expire() -> None:
            late.set()
            stop_process(child.proc, grace=1.0)

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.start()
        lines: list[str] = []
        try:
            for raw in child.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                if line.startswith(prefix):
                    return lines
        finally:
            timer.cancel()
        if late.is_set():
            raise Unpaired(f"{what} took more than {seconds:.0f} s")
        code = child.finish(wait=10)
        raise Unpaired(f"{what} failed (exit {code}): {child.stderr_tail()[-500:]}")

    def start(self) -> None:
        cfg = self.cfg
        wait = float(cfg["lock_wait_s"])
        try:
            self.holder = Child(f"{self.step} (pause writes)", cfg["session_argv"], self.env,
                                wait + float(cfg["hold_max_s"]) + self.limits["command"], stdin=True)
            self._send(f"SET SESSION lock_wait_timeout = {int(wait)};\n" + cfg["tables_sql"])
            tables = [json.loads(line[len("table:"):])
                      for line in self._until(self.holder, "listed:", self.limits["command"], "listing the tables")
                      if line.startswith("table:")]
            other = sorted(f"{t['t']} ({t['e'] or 'no engine'})" for t in tables if t["e"].lower() != "innodb")
            if other:
                raise Unpaired(f"tables not InnoDB, which a dump's transaction does not cover: {', '.join(other)}")
            if tables:
                db = sql_ident(cfg["database"])
                self._send("LOCK TABLES " + ", ".join(f"{db}.{sql_ident(t['t'])} READ" for t in tables) + ";\n")
            self._send("SELECT 'locked:';\n")
            self._until(self.holder, "locked:", wait + 10, f"locking {len(tables)} tables (lock_wait_timeout {wait:.0f} s)")
            self.paused_at = time.monotonic()
            self.fp = Child(self.step, cfg["fingerprint_argv"], self.env, self.limits["dump"])
            first = self._until(self.fp, "snapshot:", float(cfg["hold_max_s"]), "the fingerprint's snapshot")
            self.taken_at = first[-1][len("snapshot:"):]
        except BaseException:
            self.abandon()
            raise
        self._reader = threading.Thread(target=self._read_rest, name=f"{self.step} output", daemon=True)
        self._reader.start()
        left = float(cfg["hold_max_s"]) - (time.monotonic() - self.paused_at)
        self._timer = threading.Timer(max(left, 0.0), self.release, kwargs={"expired": True})
        self._timer.daemon = True
        self._timer.start()

    def _read_rest(self) -> None:
        assert self.fp is not None and self.fp.proc.stdout is not None
        try:
            for raw in self.fp.proc.stdout:
                self._rest.append(raw.decode(errors="replace").rstrip("\n"))
        except (OSError, ValueError):
            return

    def seen(self, chunk: bytes) -> None:
        """The dump wrote ``chunk``: end the pause if a line written inside its transaction has passed."""
        if self.paused_s is not None:
            return
        data = self._tail + chunk
        if any(m in data for m in self.markers):
            self.release()
        else:
            self._tail = data[-self.longest:]

    def _end_session(self) -> bool:
        """Unlock and end the pausing session, once; return whether this call ended it."""
        with self._lock:
            if self.holder is None or self.paused_s is not None:
                return False
            if self._timer is not None:
                self._timer.cancel()
            if self.holder.proc.returncode is None:  # once it has ended, nothing is locked
                self._send("UNLOCK TABLES;\n")
                try:
                    if self.holder.proc.stdin is not None:
                        self.holder.proc.stdin.close()
                except OSError:
                    pass
                self.holder.finish(wait=10)  # its end releases any lock left
            self.paused_s = round(time.monotonic() - self.paused_at, 3) if self.paused_at is not None else 0.0
            return True

    def release(self, expired: bool = False) -> None:
        """End the pause (once; a later call does nothing). ``expired``: by the timer, at ``hold_max_s``."""
        if not self._end_session():
            return
        self.expired = expired
        if expired:
            log(f"{self.step}: the dump had not shown its transaction started within {self.cfg['hold_max_s']} s: "
                "writes resumed; the dump will be fingerprinted the scratch way")
        else:
            log(f"{self.step}: writes to {self.cfg['database']} paused for {self.paused_s:.2f} s")

    def abandon(self) -> None:
        """Something failed: end the pause, stop the fingerprint."""
        self._end_session()
        if self.fp is not None:
            self.fp.abandon()

    def result(self) -> dict:
        """The fingerprint, once it has read all (the dump has ended). Raise StepFailed if it failed."""
        assert self.fp is not None and self._reader is not None
        code = self.fp.finish()
        self._reader.join()
        if code != 0 or self.fp.timed_out:
            raise self.fp.failure(code)
        try:
            fp = json.loads(self._rest[-1]) if self._rest else None
        except ValueError:
            fp = None
        if not isinstance(fp, dict):
            raise StepFailed(self.step, "the fingerprint is not a JSON object")
        return fp


def fingerprint_file_scratch(spec: dict, dest: Path, env: dict[str, str], limits: dict[str, float]) -> dict:
    """Fingerprint a written dump the scratch way: restore the file into the scratch database (:class:`ScratchStream`)."""
    stream = ScratchStream(spec, env, limits)
    try:
        with open(dest, "rb") as fh:
            while chunk := fh.read(CHUNK):
                stream.write(chunk)
    except BaseException:
        stream.abandon()
        raise
    return stream.finish(spec)


def dump_database(spec: dict, dest: Path, config: dict) -> dict:
    """Run the database's dump command, streaming its stdout into ``dest``; return its manifest entry.

    With ``spec["snapshot"]`` a session holds one snapshot open: the fingerprint and the
    dump both read it, at the same time, so the fingerprint describes exactly what was dumped.
    With ``paired`` writes pause while the fingerprint's and the dump's snapshots start
    (MariaDB, :class:`PairedPause`); where that cannot be done, and otherwise with
    ``scratch_restore``, the dump is restored, as it is written, into a scratch database
    and that is fingerprinted (:class:`ScratchStream`). With ``artifact_placeholder``
    the fingerprint is taken of the written dump (a SQLite copy).
    stderr is drained while stdout is read; the dump has ``timeouts.dump`` seconds.
    """
    step = f"dump {spec['name']}"
    limits = timeouts(config)
    snapshot_at = iso(now_utc())
    started = time.monotonic()
    env = child_env(spec, config)
    argv, fp_argv = list(spec["argv"]), spec.get("fingerprint_argv")
    session = None
    fp = None
    if spec.get("snapshot"):
        session = SnapshotSession(spec["snapshot"], env, step, limits["dump"] * 2 + limits["command"])
        snapshot_at = session.taken_at or snapshot_at
        argv = substitute(argv, spec["snapshot"]["placeholder"], session.id)
        fp_argv = substitute(fp_argv, spec["snapshot"]["placeholder"], session.id) if fp_argv else None
    log(f"{step}: {spec['engine']} -> {dest.name}")
    beside = pool = stream = pause = None
    method, unpaired = spec.get("fingerprint_method"), None
    if spec.get("paired"):
        pause = PairedPause(spec, env, limits)
        try:
            pause.start()
            snapshot_at = pause.taken_at or snapshot_at
        except Unpaired as exc:
            pause, unpaired = None, str(exc)
            log(f"fingerprint {spec['name']}: writes not paused ({unpaired}): the dump is fingerprinted the scratch way")
    if session is None and pause is None and spec.get("scratch_restore"):
        stream = ScratchStream(spec, env, limits)
    try:
        if session is not None and fp_argv:  # it reads the same snapshot as the dump, at the same time
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fingerprint {spec['name']}")
            beside = pool.submit(fingerprint, spec, fp_argv, env, limits["dump"])
        child = Child(step, argv, env, limits["dump"])
        try:
            with open(dest, "wb") as fh:
                out = HashingWriter(fh)
                assert child.proc.stdout is not None
                while chunk := child.proc.stdout.read1(CHUNK):  # what there is: the pause ends as soon as it can
                    out.write(chunk)
                    if stream is not None:
                        stream.write(chunk)
                    if pause is not None:
                        pause.seen(chunk)
                if pause is not None:
                    pause.release()  # the dump has ended
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            child.abandon()
            raise
        code = child.finish()
        if code != 0 or child.timed_out:
            raise child.failure(code)
        if out.size == 0:
            raise StepFailed(step, "the dump is empty")
    except BaseException:
        if stream is not None:
            stream.abandon()
        if pause is not None:
            pause.abandon()
        raise
    finally:
        try:
            if pool is not None:
                pool.shutdown(wait=True)  # the snapshot stays open while the fingerprint reads it
        finally:
            if session is not None:
                session.close()
    if beside is not None:
        fp = beside.result()
        fp["taken_at"] = snapshot_at  # the snapshot's time, which the dump reads too
    fp_seconds = None
    fp_started = time.monotonic()
    if pause is not None and pause.expired:
        pause.abandon()
        unpaired = f"writes resumed after {pause.cfg['hold_max_s']} s, before the dump showed its transaction started"
        fp = fingerprint_file_scratch(spec, dest, env, limits)
        fp["taken_at"] = snapshot_at  # about when the dump's transaction started (after the pause began)
    elif pause is not None:
        fp = pause.result()
        fp["taken_at"] = snapshot_at  # the moment both snapshots were taken, writes paused
    elif stream is not None:
        fp = stream.finish(spec)
        fp["taken_at"] = snapshot_at  # what the dump's transaction saw, which started then
    elif session is None and fp_argv and spec.get("artifact_placeholder"):
        fp = fingerprint(spec, substitute(fp_argv, spec["artifact_placeholder"], str(dest)), env, limits["dump"])
        drop_empty_side_files(dest)
    if pause is not None or stream is not None:  # what the fingerprint added after the dump ended
        fp_seconds = round(time.monotonic() - fp_started, 3)
    entry = {
        "name": spec["name"],
        "engine": spec["engine"],
        "file": dest.name,
        "snapshot_at": snapshot_at,
        "size": out.size,
        "sha256": out.sha.hexdigest(),
        "seconds": round(time.monotonic() - started, 3),
        "fingerprint": fp,
    }
    if unpaired is not None:  # the scratch way instead
        method = "scratch-restore"
        entry["fingerprint_unpaired"] = unpaired
    if method and fp is not None:
        entry["fingerprint_method"] = method
    if pause is not None and not pause.expired:
        entry["writes_paused_s"] = pause.paused_s
    if fp_seconds is not None:
        entry["fingerprint_seconds"] = fp_seconds
        if method == "scratch-restore":
            entry["fingerprint_scratch_database"] = spec["scratch_restore"]["database"]
    if fp is None and spec.get("fingerprint_note"):
        entry["fingerprint_note"] = spec["fingerprint_note"]
    log(f"{step}: {out.size} bytes in {entry['seconds']:.1f} s")
    return entry


def fingerprint(spec: dict, argv: list[str], env: dict[str, str], timeout: float) -> dict:
    """Run a fingerprint command (it prints a JSON object); a failure is the backup's failure."""
    step = f"fingerprint {spec['name']}"
    done = run_command(step, argv, env, timeout)
    try:
        fp = json.loads(done.stdout)
    except ValueError:
        raise StepFailed(step, "its output is not JSON") from None
    if not isinstance(fp, dict):
        raise StepFailed(step, "the fingerprint is not a JSON object")
    return fp


def archive_files(spec: dict, dest: Path, config: dict | None = None) -> dict:
    """Write a tar.gz of the app's trees to ``dest`` (paths stored without the leading '/'); return its entry.

    Apps keep writing while this runs: a file that disappears between listing and reading
    is left out (it was being replaced), and one that grows is archived up to the size seen.
    Paths in ``spec["exclude"]`` (SQLite files, dumped on their own) are left out, and so is
    every file named like a relaunch temporary file (:func:`is_relaunch_temporary`): a
    partial copy is never archived, nor one a killed command left behind.
    """
    step = f"archive {spec['app']}"
    started = time.monotonic()
    exclude = set(spec.get("exclude") or [])  # database files dumped on their own
    count = 0
    missing: list[str] = []
    temporary: list[str] = []
    log(f"{step}: {', '.join(spec['paths'])} -> {dest.name}")
    try:
        with open(dest, "wb") as fh:
            out = HashingWriter(fh)
            with tarfile.open(fileobj=out, mode="w:gz", compresslevel=3, format=tarfile.PAX_FORMAT) as tar:
                for root in spec["paths"]:
                    if not os.path.isdir(root):
                        missing.append(root)
                        continue
                    for dirpath, dirnames, filenames in os.walk(root):
                        check_stopping(step)
                        dirnames.sort()
                        # os.walk puts a symlink to a directory among dirnames (and never descends into it):
                        # it is one more entry of the tree, archived as the link it is
                        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
                        for name in [None, *sorted(filenames + links)]:
                            path = dirpath if name is None else os.path.join(dirpath, name)
                            if path in exclude:
                                continue
                            if name is not None and is_relaunch_temporary(name):
                                temporary.append(path)
                                continue
                            try:
                                tar.add(path, arcname=path.lstrip("/"), recursive=False)
                            except FileNotFoundError:
                                continue
                            if name is not None:
                                count += 1
            fh.flush()
            os.fsync(fh.fileno())
    except (OSError, tarfile.TarError) as exc:
        raise StepFailed(step, str(exc)) from None
    if missing:
        raise StepFailed(step, f"not a directory on this host: {', '.join(missing)}")
    if temporary:
        log(f"{step}: left out {len(temporary)} temporary file(s) of relaunch: {', '.join(temporary[:5])}")
    entry = {
        "app": spec["app"],
        "file": dest.name,
        "paths": list(spec["paths"]),
        "excluded": sorted(exclude),
        "size": out.size,
        "sha256": out.sha.hexdigest(),
        "files": count,
        "seconds": round(time.monotonic() - started, 3),
    }
    if temporary:
        entry["excluded_temporary"] = temporary
    log(f"{step}: {count} files, {out.size} bytes in {entry['seconds']:.1f} s")
    return entry


# --- what a deploy needs to run what production ran ------------------------------------


def _strip_tag(reference: str) -> str:
    """``registry:5000/repo/name:tag`` -> ``registry:5000/repo/name`` (a registry's port is not a tag)."""
    head, slash, last = reference.rpartition("/")
    return f"{head}{slash}{last.split(':', 1)[0]}"


def image_reference(config_image: str, image_id: str, repo_digests: list[str] | None) -> str | None:
    """``<repo>@sha256:...`` for a container's image, or None when it is known by no digest.

    ``config_image`` is what the container was created from (the compose file's ``image:``);
    when that already names a digest it is the answer, else the digest the image was pulled
    or pushed by (``RepoDigests``) for the same repository.
    """
    if "@sha256:" in config_image:
        repo, _, digest = config_image.partition("@")
        return f"{_strip_tag(repo)}@{digest}"
    digests = [d for d in repo_digests or [] if "@sha256:" in d]
    wanted = _strip_tag(config_image)
    same = [d for d in digests if d.partition("@")[0] == wanted]
    if same:
        return same[0]
    return digests[0] if len(digests) == 1 else None


def deploy_images(config: dict) -> dict:
    """``{"images": {app: {service: "<repo>@sha256:..."}}}`` of the compose apps, with ``problems`` if any.

    Read from the containers of each compose project (``com.docker.compose.project=<app>``,
    ``com.docker.compose.service``): the running ones, else the stopped ones (a service
    stopped right now still has its container, and a rebuild needs its image all the same);
    one-off ``run`` containers are left out. A problem (a service with no container, an
    image known by no digest) is recorded, not fatal: the data backup matters more.
    """
    apps = config.get("compose_apps") or []
    images: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    if not apps:
        return {"images": images}
    docker = list(config.get("docker") or ["docker"])
    env = dict(os.environ)
    limit = timeouts(config)["docker"]
    for app in apps:
        name = app["app"]
        step = f"deploy images {name}"
        try:
            ids = run_command(step, [*docker, "ps", "-a", "-q", "--no-trunc", "--filter",
                                     f"label=com.docker.compose.project={name}"], env, limit).stdout.decode().split()
            if not ids:
                problems.append(f"{name}: no container of compose project {name} (running or stopped)")
                continue
            containers = json.loads(run_command(step, [*docker, "inspect", *ids], env, limit).stdout or b"[]")
            by_service: dict[str, list[dict]] = {}
            for c in containers:
                labels = (c.get("Config") or {}).get("Labels") or {}
                if labels.get("com.docker.compose.service") and labels.get("com.docker.compose.oneoff", "").lower() != "true":
                    by_service.setdefault(labels["com.docker.compose.service"], []).append(c)
            found: dict[str, set] = {}
            for service, group in by_service.items():
                running = [c for c in group if (c.get("State") or {}).get("Running")]
                for c in running or group:
                    config_image = (c.get("Config") or {}).get("Image") or ""
                    ref = image_reference(config_image, c.get("Image") or "", None)
                    if ref is None and c.get("Image"):
                        digests = json.loads(run_command(step, [*docker, "image", "inspect", "--format",
                                                                "{{json .RepoDigests}}", c["Image"]], env, limit).stdout or b"null")
                        ref = image_reference(config_image, c["Image"], digests)
                    found.setdefault(service, set()).add(ref or f"!{config_image}")
            for service, refs in sorted(found.items()):
                if len(refs) != 1:
                    problems.append(f"{name}/{service}: containers run different images: {', '.join(sorted(refs))}")
                elif next(iter(refs)).startswith("!"):
                    problems.append(f"{name}/{service}: image {next(iter(refs))[1:]} is known by no digest "
                                    "(built on the host, never pushed or pulled)")
                else:
                    images.setdefault(name, {})[service] = next(iter(refs))
            for service in app.get("services") or []:
                if service not in found:
                    problems.append(f"{name}/{service}: no container (running or stopped)")
        except (StepFailed, ValueError, TypeError, AttributeError) as exc:
            problems.append(f"{name}: {exc.message if isinstance(exc, StepFailed) else exc}")
    for p in problems:
        log(f"deploy images: {p}")
    return {"images": images, **({"problems": problems} if problems else {})}


def new_id(root: Path) -> str:
    base = now_utc().strftime(ID_FORMAT)
    candidate, n = base, 1
    while (root / candidate).exists() or (root / f".tmp-{candidate}").exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def make_backup(config: dict, root: Path) -> tuple[str, dict]:
    """Write one complete backup under ``root``; return (ID, manifest). Raise StepFailed (or Stopped)."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in root.glob(".tmp-*"):  # left by a run that died; we hold the lock
        log(f"removing unfinished backup {stale.name}")
        shutil.rmtree(stale, ignore_errors=True)
    work = work_dir(config)
    shutil.rmtree(work, ignore_errors=True)  # what a run that died left there; we hold the lock
    work.mkdir(mode=0o700)
    backup_id = new_id(root)
    tmp = root / f".tmp-{backup_id}"
    tmp.mkdir(mode=0o700)
    started = now_utc()
    try:
        manifest: dict = {
            "format": MANIFEST_FORMAT,
            "id": backup_id,
            "site": config["site"],
            "started_at": iso(started),
            "relaunch_version": config.get("relaunch_version"),
            "inventory_sha256": config.get("inventory_sha256"),
            "host": os.uname().nodename,
            "databases": [],
            "archives": [],
        }
        manifest["deploy"] = deploy_images(config)
        jobs = [(dump_database, spec, "databases") for spec in config.get("databases", [])]
        jobs += [(archive_files, spec, "archives") for spec in config.get("archives", [])]
        # Steps are independent (each its own file, its own database): run a few at once. The
        # slowest (a dump through `docker compose exec`, say) then sets the pace, not the sum.
        workers = max(1, int(config.get("parallel", 1)))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [(kind, pool.submit(fn, spec, tmp / spec["file"], config)) for fn, spec, kind in jobs]
            failures = []
            for kind, future in futures:  # in config order, so the manifest's order is stable
                try:
                    manifest[kind].append(future.result())
                except StepFailed as exc:
                    failures.append(exc)
        if failures:
            raise StepFailed(", ".join(f.step for f in failures), "; ".join(f.message for f in failures))
        manifest["finished_at"] = iso(now_utc())
        manifest["size"] = sum(e["size"] for e in manifest["databases"] + manifest["archives"])
        write_json(tmp / MANIFEST, manifest, mode=0o600)
        dir_fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        os.rename(tmp, root / backup_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return backup_id, manifest


def local_backups(root: Path) -> dict[str, dt.datetime]:
    """ID -> time of every complete backup under ``root`` (a directory with a manifest)."""
    found: dict[str, dt.datetime] = {}
    if root.is_dir():
        for entry in root.iterdir():
            t = parse_id(entry.name)
            if t is not None and (entry / MANIFEST).is_file():
                found[entry.name] = t
    return found


def free_space(root: Path) -> tuple[int, int]:
    """(free bytes for root, size in bytes) of the filesystem holding ``root``."""
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def free_floor(config: dict, size: int) -> int:
    """The free space below which backups are removed even when they are not off-host yet."""
    percent = config.get("min_free_percent")
    percent = DEFAULT_MIN_FREE_PERCENT if percent is None else float(percent)
    return max(int(config.get("min_free_bytes") or 0), int(size * percent / 100))


def apply_local_retention(config: dict, root: Path, offsite_done: set[str] | None) -> dict:
    """Remove the local backups that are no longer needed here; return what was done, for the status.

    ``offsite_done``: the IDs known to be off-host (None: there is no off-host store; the
    policy then applies here in full). The policy, and ``local_keep_last`` N (keep at most
    the newest N here: with an off-host store the history lives there, deduplicated; 96
    full copies a day would fill the disk), remove only backups that are off-host: one
    that is not stays until it is uploaded, however long the store is away. Only when the
    filesystem's free space is below the floor (:func:`free_floor`) are backups removed
    regardless, oldest first (those off-host first), never the newest. The result says
    which were kept for want of an off-host copy, the free space and the floor.
    """
    found = local_backups(root)
    if not found:
        return {"removed": [], "removed_below_floor": [], "not_offsite": [], "free_bytes": None, "floor_bytes": None}
    decided = plan(found, Policy(**config["retention"]), now_utc())
    unwanted = set(decided.remove)
    cap = config.get("local_keep_last")
    if cap and offsite_done is not None:
        kept = sorted(decided.keep, key=lambda k: (found[k], k), reverse=True)
        unwanted |= set(kept[cap:])
    remove = unwanted if offsite_done is None else unwanted & offsite_done
    for backup_id in sorted(remove):
        log(f"retention: removing backup {backup_id}")
        shutil.rmtree(root / backup_id)
    left = sorted((k for k in found if k not in remove), key=lambda k: (found[k], k))  # oldest first
    free, size = free_space(root)
    floor = free_floor(config, size)
    below: list[str] = []
    if free < floor:
        done = offsite_done or set()
        order = [k for k in left[:-1] if k in done] + [k for k in left[:-1] if k not in done]
        for backup_id in order:
            if free >= floor:
                break
            log(f"retention: free space {free} bytes is below the floor of {floor} bytes: removing backup {backup_id}"
                + ("" if backup_id in done else " (NOT off-host yet)"))
            shutil.rmtree(root / backup_id)
            below.append(backup_id)
            free, size = free_space(root)
    not_offsite = [] if offsite_done is None else [k for k in left if k not in offsite_done and k not in below]
    if not_offsite:
        log(f"retention: keeping {len(not_offsite)} backup(s) that are not off-host yet: {', '.join(not_offsite)}")
    return {"removed": sorted(remove), "removed_below_floor": below, "not_offsite": not_offsite,
            "free_bytes": free, "floor_bytes": floor}


# --- restic ----------------------------------------------------------------------------


def restic_env(offsite: dict) -> dict[str, str]:
    env = dict(os.environ)
    env["RESTIC_PASSWORD_FILE"] = offsite["password_file"]
    env.setdefault("RESTIC_CACHE_DIR", offsite.get("cache_dir", "/var/cache/relaunch/restic"))
    env_file = offsite.get("env_file")
    if env_file:
        for line in Path(env_file).read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                env[key.strip()] = value
    return env


def restic(config: dict, *args: str, cwd: str | None = None, check: bool = True, step: str = "offsite") -> Done:
    """Run restic on the site's repository, within ``timeouts.restic`` seconds."""
    offsite = config["offsite"]
    argv = ["restic", "-r", offsite["repository"], *offsite.get("options", []), *args]
    done = run_command(step, argv, restic_env(offsite), timeouts(config)["restic"], cwd=cwd, check=False)
    if check and done.code != 0:
        raise StepFailed(step, f"restic {args[0]} exited {done.code}: {done.stderr[-1500:]}")
    return done


def site_tag(site: str) -> str:
    return f"{SITE_TAG_PREFIX}{site}"


def snapshot_query(site: str) -> list[str]:
    """The restic arguments that select a site's snapshots: its host name and the ``relaunch`` tag.

    The site tag is checked on the answer (:func:`parse_snapshots`), so snapshots made
    before relaunch tagged sites (same host name, no ``site:`` tag) still count as the site's.
    """
    return ["--host", site, "--tag", "relaunch"]


def parse_snapshots(text: bytes | str, site: str) -> list[dict]:
    """The site's snapshots in ``restic snapshots --json`` output: [{snapshot, full_id, id, time, paths}], as listed.

    A snapshot of another host, or tagged for another site, is not the site's; one tagged
    for no site (older relaunch) on the site's host is. ``id`` is the backup ID (its tag).
    """
    out = []
    for snap in json.loads(text or b"[]") or []:
        tags = snap.get("tags") or []
        sites = [t[len(SITE_TAG_PREFIX):] for t in tags if t.startswith(SITE_TAG_PREFIX)]
        if snap.get("hostname") not in (None, site) or "relaunch" not in tags or (sites and sites != [site]):
            continue
        ids = [t for t in tags if parse_id(t)]
        out.append({"snapshot": snap.get("short_id") or (snap.get("id") or "")[:8], "full_id": snap.get("id"),
                    "id": ids[0] if ids else None, "time": snap.get("time"), "paths": snap.get("paths")})
    return out


def snapshots(config: dict) -> list[dict]:
    """This site's off-host snapshots (see :func:`parse_snapshots`)."""
    done = restic(config, "snapshots", "--json", *snapshot_query(config["site"]), step="offsite snapshots")
    return parse_snapshots(done.stdout, config["site"])


def upload(config: dict, root: Path, backup_id: str) -> dict:
    """restic backup of ROOT/ID (a relative path), tagged relaunch, site:<site> and the ID, as host <site>."""
    started = time.monotonic()
    site = config["site"]
    log(f"offsite: restic backup of {backup_id}")
    done = restic(config, "backup", "--json", "--host", site, "--tag", "relaunch", "--tag", site_tag(site),
                  "--tag", backup_id, backup_id, cwd=str(root), step="offsite backup")
    summary: dict = {}
    for line in done.stdout.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("message_type") == "summary":
            summary = msg
    result = {"id": backup_id, "snapshot": summary.get("snapshot_id"), "data_added": summary.get("data_added"),
              "total_bytes_processed": summary.get("total_bytes_processed"),
              "seconds": round(time.monotonic() - started, 3)}
    log(f"offsite: {backup_id} is snapshot {result['snapshot']}, {result['data_added']} bytes added in {result['seconds']:.1f} s")
    return result


def offsite_sync(config: dict, root: Path, result: dict, done: set[str]) -> None:
    """Upload every local backup not off-host yet (oldest first); say what the retention policy would forget there.

    This host never forgets or prunes: its store credentials may be append-only (they are,
    where relaunch authorized them), so that a compromised host cannot erase its own off-host
    history. The operator does that with other credentials (``fab backup --prune``);
    ``result["retention"]`` says how many snapshots the policy would forget now.

    ``done`` (the IDs off-host, or uploaded once and since forgotten by the policy) and
    ``result`` (for the status) are filled as the work goes, so a failure part-way leaves
    what was achieved in both. Raise StepFailed at the first failure.
    """
    listed = snapshots(config)
    present = {s["id"] for s in listed if s["id"]}
    done |= present
    local = local_backups(root)
    missing = sorted((k for k in local if k not in done), key=lambda k: (local[k], k))
    result.update(uploaded=[], data_added=0, missing=len(missing))
    for backup_id in missing:
        check_stopping("offsite backup")
        up = upload(config, root, backup_id)
        done.add(backup_id)
        remember_uploaded(config, backup_id)
        result["uploaded"].append(up)
        result["data_added"] += up["data_added"] or 0
        result["snapshot"] = up["snapshot"]
        # The retention preview counts the listing above plus what this run uploaded: what a second listing would
        # show, barring another writer of the site in between (the count only informs the status; the operator's
        # prune lists for itself). A second listing cost a restic call: the repository opened anew, its key
        # derived, an ssh session to the store (1-2 s each on a loaded host: a fifth of a small backup).
        listed.append({"snapshot": up["snapshot"], "full_id": up["snapshot"] or f"uploaded:{backup_id}",
                       "id": backup_id, "time": None, "paths": [backup_id]})
    result["total_bytes_processed"] = sum(u["total_bytes_processed"] or 0 for u in result["uploaded"])
    decided = retention_decision(listed, config["retention"], now_utc())
    result["retention"] = {
        "snapshots": len(decided.keep) + len(decided.remove), "would_keep": len(decided.keep),
        "would_forget": len(decided.remove), "append_only": bool(config["offsite"].get("append_only")),
        "by": "the operator, with other credentials: fab backup --prune",
    }


def retention_decision(snaps: list[dict], retention: dict, now: dt.datetime):
    """The policy's decision over a site's snapshots (``parse_snapshots`` entries), keyed by full snapshot ID.

    A snapshot's time is its backup ID's (when the backup was taken, not when it was uploaded);
    one without a relaunch backup ID is left out (never forgotten by relaunch). Returns
    ``relaunch_retention.Plan``.
    """
    by_snapshot = {s["full_id"]: parse_id(s["id"]) for s in snaps if s.get("id") and s.get("full_id") and parse_id(s["id"])}
    return plan(by_snapshot, Policy(**retention), now)


# --- status ----------------------------------------------------------------------------


def load_status(config: dict) -> dict:
    """The status file's content; one that is not JSON is moved aside (``.corrupt``), said, and started afresh."""
    path = Path(config["status_file"])
    try:
        data = read_json(path, {})
    except ValueError as exc:
        aside = path.with_name(f"{path.name}.corrupt")
        os.replace(path, aside)
        print(f"the status file {path} was not JSON ({exc}); moved to {aside}, starting a new one", file=sys.stderr, flush=True)
        data = {}
    if not isinstance(data, dict) or not isinstance(data.get("runs", []), list):
        data = {}
    data.setdefault("runs", [])
    return data


def save_status(config: dict, data: dict) -> None:
    data["runs"] = data["runs"][-STATUS_KEEP:]
    write_json(Path(config["status_file"]), data)


def remember_uploaded(config: dict, backup_id: str) -> None:
    """Record that ``backup_id`` went off-host: the policy may forget it there later, and it is not uploaded again."""
    status = load_status(config)
    local = set(local_backups(Path(config["root"])))
    status["offsite_uploaded"] = sorted((set(status.get("offsite_uploaded") or []) | {backup_id}) & local)
    save_status(config, status)


def begin_run(config: dict, entry: dict) -> None:
    """Record the run as ``running`` before it does anything; one still ``running`` from before was killed (we hold the lock)."""
    status = load_status(config)
    for old in status["runs"]:
        if old.get("state") == "running":
            old.update(state="killed", ok=False, step=old.get("step") or "killed",
                       error="the run ended without recording its end (SIGKILL, out of memory, or the host went down); "
                             f"found by the run of {entry['started_at']}")
    status["runs"].append(entry)
    save_status(config, status)


def finish_run(config: dict, entry: dict) -> None:
    status = load_status(config)
    for i, old in enumerate(status["runs"]):
        if old.get("started_at") == entry["started_at"] and old.get("pid") == entry["pid"]:
            status["runs"][i] = entry
            break
    else:
        status["runs"].append(entry)
    save_status(config, status)


def run_backup(config: dict, root: Path, entry: dict) -> None:
    """The work of one run, its results recorded in ``entry`` as they come. Raise StepFailed or Stopped."""
    backup_id, manifest = make_backup(config, root)
    entry.update(id=backup_id, size=manifest["size"], local_ok=True)
    if manifest["deploy"].get("problems"):
        entry["warnings"] = [f"deploy images: {p}" for p in manifest["deploy"]["problems"]]
    log(f"backup {backup_id}: {manifest['size']} bytes in {root / backup_id}")
    offsite_failure: StepFailed | None = None
    done: set[str] | None = None
    if config.get("offsite"):
        done = set(load_status(config).get("offsite_uploaded") or [])
        entry["offsite"] = {}
        try:
            offsite_sync(config, root, entry["offsite"], done)
        except StepFailed as exc:  # local retention still runs, removing only what is off-host
            offsite_failure = exc
    entry["local"] = apply_local_retention(config, root, done)
    entry["removed"] = entry["local"]["removed"] + entry["local"]["removed_below_floor"]
    if offsite_failure is not None:
        raise offsite_failure


_critical = threading.Event()  # set while the run records its end: a signal then only stops the children


def _on_signal(signum: int, frame: object) -> None:
    stop_all(signal.Signals(signum).name)
    if not _critical.is_set():
        _critical.set()  # one Stopped per run
        raise Stopped(signum)


def cmd_run(config: dict) -> int:
    root = Path(config["root"])
    lock_path = Path(config["lock"])
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(lock_path, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            print(f"another backup is already running (lock {lock_path} is held); this run does nothing", file=sys.stderr, flush=True)
            return EX_ALREADY_RUNNING
        raise
    started = now_utc()
    t0 = time.monotonic()
    entry: dict = {"started_at": iso(started), "pid": os.getpid(), "state": "running", "ok": False, "id": None,
                   "step": None, "error": None}
    code = 1
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        begin_run(config, entry)
        run_backup(config, root, entry)
        entry["ok"] = True
        code = 0
    except StepFailed as exc:
        entry.update(step=exc.step, error=exc.message)
        print(f"backup failed at step {exc.step}: {exc.message}", file=sys.stderr, flush=True)
    except Stopped as exc:
        what = ("SIGTERM (systemd stopped the unit, or its TimeoutStartSec= passed)" if exc.signum == signal.SIGTERM
                else signal.Signals(exc.signum).name)
        entry.update(step="stopped", error=f"stopped by {what}" + (f" during {entry['step']}" if entry.get("step") else ""))
        print(f"backup stopped by {signal.Signals(exc.signum).name}", file=sys.stderr, flush=True)
        code = 128 + exc.signum
    except Exception as exc:  # noqa: BLE001 - any failure is recorded and visible, never swallowed
        entry.update(step="internal", error=f"{type(exc).__name__}: {exc}")
        print(f"backup failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        _critical.set()
        entry["state"] = "finished"
        entry["finished_at"] = iso(now_utc())
        entry["seconds"] = round(time.monotonic() - t0, 3)
        try:
            finish_run(config, entry)
        except Exception as exc:  # noqa: BLE001 - said, and the run fails
            print(f"could not record the run in {config['status_file']}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            code = code or 1
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code == 0:
        log(f"backup {entry['id']} done in {entry['seconds']:.1f} s")
    elif config.get("alert"):
        post_failure(config, entry)
        try:
            finish_run(config, entry)  # with what became of the alert
        except Exception as exc:  # noqa: BLE001 - said; the run's end is recorded already
            print(f"could not record the alert in {config['status_file']}: {exc}", file=sys.stderr, flush=True)
    return code


def post_failure(config: dict, entry: dict) -> None:
    """POST ``backup_failed`` for this run to the site's webhook (config ``alert``); record the outcome in ``entry``.

    The same body as relaunch's own alerts (``relaunch_webhook``); the URL and token are read
    from their 0600 files, and only the URL's scheme and host are ever written anywhere.
    """
    spec = config["alert"]
    site, host = config.get("site") or "?", spec.get("host") or os.uname().nodename
    try:
        url = Path(spec["url_file"]).read_text().strip()
        token = Path(spec["token_file"]).read_text().strip() if spec.get("token_file") else None
    except OSError as exc:
        entry["alert"] = {"event": "backup_failed", "sent": False, "error": f"{spec['url_file']}: {exc.strerror}"}
        print(f"backup_failed alert NOT sent: {entry['alert']['error']}", file=sys.stderr, flush=True)
        return
    started = entry["started_at"][:16].replace("T", " ")
    payload = webhook.body(
        "backup_failed", site, f"relaunch {site}: backup failed on {host}",
        f"The backup run of {started} UTC failed at step {entry.get('step')}: {entry.get('error')}",
        {"host": host, "step": entry.get("step"), "error": entry.get("error"), "started_at": entry["started_at"],
         "sender": "backup runner"},
        topic=spec.get("topic"), version=config.get("relaunch_version") or "")
    ok, status, error = webhook.post(url, payload, token=token, version=config.get("relaunch_version") or "")
    entry["alert"] = {"event": "backup_failed", "sent": ok, "status": status, "error": error, "to": webhook.shown(url)}
    if ok:
        log(f"backup_failed alert sent to {webhook.shown(url)} (HTTP {status})")
    else:
        print(f"backup_failed alert NOT sent to {webhook.shown(url)}: {error}", file=sys.stderr, flush=True)


def verify_dir(directory: Path) -> dict:
    """Check every artifact of the backup in ``directory`` against its manifest: {id, ok, problems, artifacts}."""
    manifest = json.loads((directory / MANIFEST).read_text())
    artifacts = []
    problems = []
    for entry in manifest.get("databases", []) + manifest.get("archives", []):
        path = directory / entry["file"]
        if not path.is_file():
            artifacts.append({"file": entry["file"], "ok": False, "expected": entry["sha256"], "actual": None})
            problems.append(f"{entry['file']}: missing")
            continue
        digest, size = sha256_file(path)
        ok = digest == entry["sha256"] and size == entry["size"]
        artifacts.append({"file": entry["file"], "ok": ok, "expected": entry["sha256"], "actual": digest, "size": size})
        if not ok:
            problems.append(f"{entry['file']}: sha256 {digest} (size {size}) does not match the manifest's {entry['sha256']} (size {entry['size']})")
    return {"id": manifest.get("id"), "ok": not problems, "problems": problems, "artifacts": artifacts}


def cmd_verify(config: dict, backup_id: str | None, offsite: bool) -> int:
    root = Path(config["root"])
    ids = sorted(local_backups(root))
    if backup_id is None and not ids:
        result: dict = {"id": None, "ok": False, "problems": ["no backup on this host"], "artifacts": []}
    elif (backup_id or ids[-1]) not in ids:
        result = {"id": backup_id, "ok": False, "problems": [f"no backup {backup_id} on this host"], "artifacts": []}
    else:
        backup_id = backup_id or ids[-1]
        result = verify_dir(root / backup_id)
        verified = read_json(Path(config["verified_file"]), {})
        verified[backup_id] = {"ok": result["ok"], "at": iso(now_utc()), "problems": result["problems"]}
        verified = {k: v for k, v in verified.items() if k in ids}
        write_json(Path(config["verified_file"]), verified)
    if offsite and config.get("offsite"):
        try:
            done = restic(config, "check", check=False, step="offsite check")
            text = (done.stdout.decode(errors="replace") + done.stderr).strip()
            result["offsite"] = {"ok": done.code == 0, "output": text[-2000:]}
            if done.code != 0:
                result["problems"].append(f"restic check exited {done.code}")
        except StepFailed as exc:
            result["offsite"] = {"ok": False, "output": exc.message[-2000:]}
            result["problems"].append(f"restic check: {exc.message[-500:]}")
        if not result["offsite"]["ok"]:
            result["ok"] = False
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


def cmd_list(config: dict) -> int:
    root = Path(config["root"])
    verified = read_json(Path(config["verified_file"]), {})
    local = []
    for backup_id in sorted(local_backups(root)):
        manifest = read_json(root / backup_id / MANIFEST, {})
        local.append({"id": backup_id, "started_at": manifest.get("started_at"), "finished_at": manifest.get("finished_at"),
                      "size": manifest.get("size"), "verified": verified.get(backup_id)})
    result: dict = {"local": local, "offsite": None, "offsite_error": None}
    if config.get("offsite"):
        try:
            result["offsite"] = snapshots(config)
        except StepFailed as exc:
            result["offsite_error"] = exc.message
    print(json.dumps(result, indent=2))
    return 0


def cmd_init_offsite(config: dict) -> int:
    if not config.get("offsite"):
        log("no off-host store configured")
        return 0
    if restic(config, "cat", "config", check=False).code == 0:
        log("restic repository exists")
        return 0
    restic(config, "init", step="offsite init")
    log("restic repository created")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # every file this writes (status, verification, backups) is root's alone, however it was started
    parser = argparse.ArgumentParser(prog="backup.py", description="relaunch backup runner")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run")
    verify = sub.add_parser("verify")
    verify.add_argument("id", nargs="?")
    verify.add_argument("--offsite", action="store_true")
    sub.add_parser("list")
    sub.add_parser("init-offsite")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    try:
        if args.command == "verify":
            return cmd_verify(config, args.id, args.offsite)
        if args.command == "list":
            return cmd_list(config)
        if args.command == "init-offsite":
            return cmd_init_offsite(config)
        return cmd_run(config)
    except StepFailed as exc:
        print(f"{exc.step} failed: {exc.message}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
