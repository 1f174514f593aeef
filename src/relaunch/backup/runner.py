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
  but a caller that asked for a backup learns it got none. Dumps each database while
  streaming it to disk (sha256 computed on the way), archives each app's file trees
  (tar.gz), writes ``manifest.json``, all in ``ROOT/.tmp-ID``, then renames it to
  ``ROOT/ID`` (no half backup is ever visible under its ID). Then retention, then the
  off-host copy (restic backup tagged with the ID, then restic forget/prune by the same
  policy). Exits 0 only if every step succeeded; otherwise non-zero with the failed step
  named on stderr and in the status file.
- ``verify [ID] [--offsite]``: sha256 and size of every artifact of backup ID (default the
  newest) against its manifest; ``--offsite`` adds ``restic check``. Prints JSON.
- ``list``: local backups (with verification results) and off-host snapshots, as JSON.
- ``init-offsite``: create the restic repository unless it exists.

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
import subprocess
import sys
import tarfile
import time
from pathlib import Path

try:  # beside this script on the host; inside the package when imported by tests
    from relaunch_retention import Policy, plan  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on how it is loaded
    from relaunch.backup.retention import Policy, plan

DEFAULT_CONFIG = "/etc/relaunch/backup.json"
EX_ALREADY_RUNNING = 75
ID_FORMAT = "%Y%m%dT%H%M%SZ"
MANIFEST = "manifest.json"
STATUS_KEEP = 50
CHUNK = 1024 * 1024
MANIFEST_FORMAT = 1


class StepFailed(Exception):
    """A named step of a run failed."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


def log(message: str) -> None:
    print(message, flush=True)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_id(backup_id: str) -> dt.datetime | None:
    """The time of a backup ID (``20260101T000000Z``, maybe with a ``-N`` suffix), or None if it is not one."""
    try:
        return dt.datetime.strptime(backup_id.split("-")[0], ID_FORMAT).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


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


def write_json(path: Path, data, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
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


# --- one backup ------------------------------------------------------------------------


def child_env(spec: dict) -> dict[str, str]:
    """The environment of a dump command: ours plus values read from (0600) files, never logged."""
    env = dict(os.environ)
    for key, path in (spec.get("env_from_files") or {}).items():
        env[key] = Path(path).read_text().rstrip("\r\n")
    return env


class SnapshotSession:
    """A database session that holds a snapshot open while the dump and the fingerprint read it.

    ``spec``: ``session_argv`` (a client reading SQL on stdin), ``send`` (the SQL that
    starts the transaction and prints ``expect`` + "<id> <time>"), ``expect``. The snapshot
    lives until the session's stdin closes.
    """

    def __init__(self, spec: dict, env: dict[str, str], step: str) -> None:
        self.step = step
        try:
            self.proc = subprocess.Popen(spec["session_argv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env)
        except OSError as exc:
            raise StepFailed(step, f"cannot start {spec['session_argv'][0]}: {exc.strerror}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(spec["send"].encode())
        self.proc.stdin.flush()
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith(spec["expect"]):
                self.id, _, self.taken_at = line[len(spec["expect"]):].partition(" ")
                return
        self.close()
        raise StepFailed(step, f"the snapshot session ended without a snapshot: {self.stderr[-1000:]}")

    def close(self) -> None:
        self.stderr = ""
        try:
            _, err = self.proc.communicate(timeout=60)  # closes stdin: the transaction ends
            self.stderr = (err or b"").decode(errors="replace")
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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


def dump_database(spec: dict, dest: Path) -> dict:
    """Run the database's dump command, streaming its stdout into ``dest``; return its manifest entry.

    With ``spec["snapshot"]`` a session holds one snapshot open: the fingerprint and the
    dump both read it, so the fingerprint describes exactly what was dumped. With
    ``artifact_placeholder`` the fingerprint is taken of the written dump (a SQLite copy).
    """
    step = f"dump {spec['name']}"
    snapshot_at = iso(now_utc())
    started = time.monotonic()
    env = child_env(spec)
    argv, fp_argv = list(spec["argv"]), spec.get("fingerprint_argv")
    session = None
    fp = None
    if spec.get("snapshot"):
        session = SnapshotSession(spec["snapshot"], env, step)
        snapshot_at = session.taken_at or snapshot_at
        argv = substitute(argv, spec["snapshot"]["placeholder"], session.id)
        fp_argv = substitute(fp_argv, spec["snapshot"]["placeholder"], session.id) if fp_argv else None
    log(f"{step}: {spec['engine']} -> {dest.name}")
    try:
        if session is not None and fp_argv:
            fp = fingerprint(spec, fp_argv, env)
            fp["taken_at"] = snapshot_at  # the snapshot's time, which the dump reads too
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            raise StepFailed(step, f"cannot start {argv[0]}: {exc.strerror}") from None
        with open(dest, "wb") as fh:
            out = HashingWriter(fh)
            assert proc.stdout is not None
            while chunk := proc.stdout.read(CHUNK):
                out.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = proc.wait()
    finally:
        if session is not None:
            session.close()
    if code != 0:
        raise StepFailed(step, f"exit status {code}: {err.strip()[-1000:]}")
    if out.size == 0:
        raise StepFailed(step, "the dump is empty")
    fp_seconds = None
    if session is None and spec.get("scratch_restore"):
        fp_started = time.monotonic()
        fp = fingerprint_by_restore(spec, dest, env)
        fp["taken_at"] = snapshot_at  # what the dump's transaction saw, which started then
        fp_seconds = round(time.monotonic() - fp_started, 3)
    elif session is None and fp_argv and spec.get("artifact_placeholder"):
        fp = fingerprint(spec, substitute(fp_argv, spec["artifact_placeholder"], str(dest)), env)
        drop_empty_side_files(dest)
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
    if spec.get("fingerprint_method") and fp is not None:
        entry["fingerprint_method"] = spec["fingerprint_method"]
    if fp_seconds is not None:
        entry["fingerprint_seconds"] = fp_seconds
        entry["fingerprint_scratch_database"] = spec["scratch_restore"]["database"]
    if fp is None and spec.get("fingerprint_note"):
        entry["fingerprint_note"] = spec["fingerprint_note"]
    log(f"{step}: {out.size} bytes in {entry['seconds']:.1f} s")
    return entry


def run_step(step: str, argv: list[str], env: dict[str, str]) -> None:
    """Run one command to completion; a failure is the step's (its stderr's tail in the message)."""
    try:
        run = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, env=env)
    except OSError as exc:
        raise StepFailed(step, f"cannot start {argv[0]}: {exc.strerror}") from None
    if run.returncode != 0:
        raise StepFailed(step, f"exit status {run.returncode}: {run.stderr.decode(errors='replace').strip()[-1000:]}")


def fingerprint_by_restore(spec: dict, dest: Path, env: dict[str, str]) -> dict:
    """Fingerprint the dump at ``dest`` by restoring it into a scratch database, which is dropped after.

    ``spec["scratch_restore"]``: drop/create/restore/fingerprint argv lists (the restore's
    holds the artifact placeholder). The scratch database is dropped first (left by a run
    that died: the run lock makes it ours) and always after; a failed drop fails the step.
    """
    scratch = spec["scratch_restore"]
    step = f"fingerprint {spec['name']}"
    log(f"{step}: restoring {dest.name} into scratch database {scratch['database']}")
    run_step(f"{step} (drop scratch database)", scratch["drop_argv"], env)
    try:
        run_step(f"{step} (create scratch database)", scratch["create_argv"], env)
        run_step(f"{step} (restore into scratch database)",
                 substitute(scratch["restore_argv"], spec["artifact_placeholder"], str(dest)), env)
        fp = fingerprint(spec, scratch["fingerprint_argv"], env)
    except BaseException:
        try:
            run_step(f"{step} (drop scratch database)", scratch["drop_argv"], env)
        except StepFailed as exc:  # the first failure is the one reported; this one is logged
            log(f"{exc.step}: {exc.message}")
        raise
    run_step(f"{step} (drop scratch database)", scratch["drop_argv"], env)
    if not isinstance(fp, dict):
        raise StepFailed(step, "the fingerprint is not a JSON object")
    return fp


def fingerprint(spec: dict, argv: list[str], env: dict[str, str]) -> object:
    """Run a fingerprint command (it prints JSON); a failure is the backup's failure."""
    step = f"fingerprint {spec['name']}"
    run = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, env=env)
    if run.returncode != 0:
        raise StepFailed(step, f"exit status {run.returncode}: {run.stderr.decode(errors='replace').strip()[-1000:]}")
    try:
        return json.loads(run.stdout)
    except ValueError:
        raise StepFailed(step, "its output is not JSON") from None


def archive_files(spec: dict, dest: Path) -> dict:
    """Write a tar.gz of the app's trees to ``dest`` (paths stored without the leading '/'); return its entry.

    Apps keep writing while this runs: a file that disappears between listing and reading
    is left out (it was being replaced), and one that grows is archived up to the size seen.
    Paths in ``spec["exclude"]`` (SQLite files, dumped on their own) are left out.
    """
    step = f"archive {spec['app']}"
    started = time.monotonic()
    exclude = set(spec.get("exclude") or [])  # database files dumped on their own
    count = 0
    missing: list[str] = []
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
                        dirnames.sort()
                        for name in [None, *sorted(filenames)]:
                            path = dirpath if name is None else os.path.join(dirpath, name)
                            if path in exclude:
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
    log(f"{step}: {count} files, {out.size} bytes in {entry['seconds']:.1f} s")
    return entry


def new_id(root: Path) -> str:
    base = now_utc().strftime(ID_FORMAT)
    candidate, n = base, 1
    while (root / candidate).exists() or (root / f".tmp-{candidate}").exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def make_backup(config: dict, root: Path) -> tuple[str, dict]:
    """Write one complete backup under ``root``; return (ID, manifest). Raise StepFailed."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in root.glob(".tmp-*"):  # left by a run that died; we hold the lock
        log(f"removing unfinished backup {stale.name}")
        shutil.rmtree(stale, ignore_errors=True)
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
        jobs = [(dump_database, spec, "databases") for spec in config.get("databases", [])]
        jobs += [(archive_files, spec, "archives") for spec in config.get("archives", [])]
        # Steps are independent (each its own file, its own database): run a few at once. The
        # slowest (a dump through `docker compose exec`, say) then sets the pace, not the sum.
        workers = max(1, int(config.get("parallel", 1)))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [(kind, pool.submit(fn, spec, tmp / spec["file"])) for fn, spec, kind in jobs]
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


def apply_local_retention(config: dict, root: Path) -> list[str]:
    """Remove the local backups the policy does not keep; with ``local_keep_last`` N, keep at most the newest N.

    The cap exists because with an off-host store the history lives there (restic
    deduplicates it; plain directories here do not): 96 full copies a day of a site's data
    would fill the host's disk. Without an off-host store the install leaves it unset and
    the whole policy applies here.
    """
    found = local_backups(root)
    decided = plan(found, Policy(**config["retention"]), now_utc())
    remove = set(decided.remove)
    cap = config.get("local_keep_last")
    if cap:
        kept = sorted(decided.keep, key=lambda k: (found[k], k), reverse=True)
        remove |= set(kept[cap:])
    for backup_id in sorted(remove):
        log(f"retention: removing backup {backup_id}")
        shutil.rmtree(root / backup_id)
    return sorted(remove)


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


def restic(offsite: dict, *args: str, cwd: str | None = None, check: bool = True, step: str = "offsite"):
    argv = ["restic", "-r", offsite["repository"], *offsite.get("options", []), *args]
    run = subprocess.run(argv, capture_output=True, cwd=cwd, env=restic_env(offsite), stdin=subprocess.DEVNULL)
    if check and run.returncode != 0:
        raise StepFailed(step, f"restic {args[0]} exited {run.returncode}: {run.stderr.decode(errors='replace').strip()[-1500:]}")
    return run


def offsite_copy(config: dict, root: Path, backup_id: str) -> dict:
    """restic backup of ROOT/ID (relative path, tagged relaunch + ID), then forget/prune by the policy."""
    offsite = config["offsite"]
    started = time.monotonic()
    log(f"offsite: restic backup of {backup_id}")
    run = restic(offsite, "backup", "--json", "--host", config["site"], "--tag", "relaunch", "--tag", backup_id,
                 backup_id, cwd=str(root), step="offsite backup")
    summary: dict = {}
    for line in run.stdout.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("message_type") == "summary":
            summary = msg
    result = {
        "snapshot": summary.get("snapshot_id"),
        "data_added": summary.get("data_added"),
        "total_bytes_processed": summary.get("total_bytes_processed"),
        "seconds": round(time.monotonic() - started, 3),
    }
    log(f"offsite: snapshot {result['snapshot']}, {result['data_added']} bytes added in {result['seconds']:.1f} s")
    snaps = snapshots(offsite)
    by_snapshot = {s["snapshot"]: parse_id(s["id"]) for s in snaps if s.get("id") and parse_id(s["id"])}
    decided = plan(by_snapshot, Policy(**config["retention"]), now_utc())
    if decided.remove:
        log(f"offsite: forgetting {len(decided.remove)} snapshot(s) by the retention policy")
        restic(offsite, "forget", "--prune", *sorted(decided.remove), step="offsite forget")
    result["forgotten"] = len(decided.remove)
    return result


def snapshots(offsite: dict) -> list[dict]:
    """Off-host snapshots made by relaunch: [{snapshot, id, time, paths}], oldest first."""
    run = restic(offsite, "snapshots", "--json", "--tag", "relaunch", step="offsite snapshots")
    out = []
    for snap in json.loads(run.stdout or b"[]") or []:
        ids = [t for t in snap.get("tags") or [] if parse_id(t)]
        out.append({"snapshot": snap.get("short_id") or snap.get("id", "")[:8], "full_id": snap.get("id"),
                    "id": ids[0] if ids else None, "time": snap.get("time"), "paths": snap.get("paths")})
    return out


# --- status ----------------------------------------------------------------------------


def record_run(config: dict, entry: dict) -> None:
    path = Path(config["status_file"])
    runs = read_json(path, {"runs": []}).get("runs", [])
    runs.append(entry)
    write_json(path, {"runs": runs[-STATUS_KEEP:]})


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
    entry: dict = {"started_at": iso(started), "ok": False, "id": None, "step": None, "error": None}
    code = 0
    try:
        backup_id, manifest = make_backup(config, root)
        entry.update(id=backup_id, size=manifest["size"], local_ok=True)
        log(f"backup {backup_id}: {manifest['size']} bytes in {root / backup_id}")
        entry["removed"] = apply_local_retention(config, root)
        if config.get("offsite"):
            entry["offsite"] = offsite_copy(config, root, backup_id)
        entry["ok"] = True
    except StepFailed as exc:
        entry.update(step=exc.step, error=exc.message)
        print(f"backup failed at step {exc.step}: {exc.message}", file=sys.stderr, flush=True)
        code = 1
    except Exception as exc:  # noqa: BLE001 - any failure is recorded and visible, never swallowed
        entry.update(step="internal", error=f"{type(exc).__name__}: {exc}")
        print(f"backup failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        entry["finished_at"] = iso(now_utc())
        entry["seconds"] = round(time.monotonic() - t0, 3)
        record_run(config, entry)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    if code == 0:
        log(f"backup {entry['id']} done in {entry['seconds']:.1f} s")
    return code


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
        run = restic(config["offsite"], "check", check=False)
        text = (run.stdout + run.stderr).decode(errors="replace").strip()
        result["offsite"] = {"ok": run.returncode == 0, "output": text[-2000:]}
        if run.returncode != 0:
            result["ok"] = False
            result["problems"].append(f"restic check exited {run.returncode}")
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
            result["offsite"] = snapshots(config["offsite"])
        except StepFailed as exc:
            result["offsite_error"] = exc.message
    print(json.dumps(result, indent=2))
    return 0


def cmd_init_offsite(config: dict) -> int:
    offsite = config.get("offsite")
    if not offsite:
        log("no off-host store configured")
        return 0
    if restic(offsite, "cat", "config", check=False).returncode == 0:
        log("restic repository exists")
        return 0
    restic(offsite, "init", step="offsite init")
    log("restic repository created")
    return 0


def main(argv: list[str] | None = None) -> int:
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
