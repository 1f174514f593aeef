"""The data step: bring the newest data onto the new host, from the old host (live) or from a backup.

**live** (the old host answers): its writers are stopped (apps, backup timer), each
database is dumped while nothing writes, and every dump and file tree
goes host to host — the new host pulls them over a temporary SSH link
(:mod:`relaunch.transfer`), nothing is relayed through this machine. RPO 0. A database
server's dump is also restored on the new host as it arrives (:func:`streams`), and a
database file inside a tree (SQLite) is put in place once both its dump and the trees
around it have arrived: the restore step then has nothing left to do for it, unless that
restore failed, when it restores from the file as for any other dump.

**backup**: in a rebuild whose old host still answers, the new host pulls the backup from
the old host's backup directory (:mod:`.old_host_backup`); otherwise (and always in a
drill) it fetches it from the off-host store itself (restic, with the store access
:mod:`relaunch.pipeline.store` sets up). Either way every artifact is checked against the
manifest's sha256 before anything is restored. RPO is that backup's age.

Either way the step leaves, in a 0700 work directory on the new host, one dump file per
database and what the restore needs (archives or trees already in place). A backup's
fingerprints come from its manifest; a live source's are taken by the verify step, from
the old host (its writers stay stopped), at the same time as the new host's: while the
data moves, the old host's CPU and disks serve the dumps and copies alone.
"""

from __future__ import annotations

import json
import logging
import posixpath
import shlex
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import invoke.exceptions

from relaunch import apps, transfer
from relaunch.backup import offsite
from relaunch.backup.manifest import MANIFEST, Manifest, parse
from relaunch.databases import engine
from relaunch.databases.runner import run as run_command
from relaunch.errors import RelaunchError
from relaunch.inventory.model import inside
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.steps import old_host_backup
from relaunch.pipeline.store import store_access
from relaunch.remote import CONNECTION_ERRORS

log = logging.getLogger(__name__)

#: Dumps and trees moved at once (each mostly waits on a disk or the link).
PARALLEL = 4
#: Jobs of the live data step at once: dumps and tree copies.
LIVE_PARALLEL = 8
#: pg_dump's compression for a live pull (host to host): none.
LIVE_COMPRESS = 0
#: ``ctx.results`` key: the new host's Compose command, once this process's live data step left its writers
#: stopped and its database servers up (the restore step's first attempt need not do it again).
NEW_HOST_READY = "new_host_ready"
#: ``ctx.results`` key: the old host's Compose command, once this process's live data step stopped its writers and
#: started its database servers (the verify step reads the source there).
OLD_HOST_READY = "old_host_ready"


def workdir(ctx: RunContext) -> str:
    return f"/var/lib/relaunch/{ctx.journal.kind}/{ctx.journal.id}"


def database_files(ctx: RunContext) -> set[str]:
    """Database files inside the trees (SQLite): moved by the dump, left out of tree copies and listings."""
    paths = set()
    for db in ctx.inv.databases:
        if db.path:
            paths |= {db.path, f"{db.path}-wal", f"{db.path}-shm", f"{db.path}-journal"}
    return paths


def sampling(ctx: RunContext) -> transfer.Sampling:
    """How trees are hashed in this run: every file, or a sample seeded by the run's id for very large trees
    (the same files on the source and the new host, other files in the next run); the threshold and the
    sample's size are the inventory's ``verify.sample_above`` and ``verify.sample_size``."""
    return transfer.Sampling(ctx.journal.id, ctx.inv.verify.sample_above, ctx.inv.verify.sample_size)


def trees(ctx: RunContext) -> list[str]:
    return [path for app in ctx.inv.apps for path in app.trees()]  # files and named volumes


def in_a_tree(db: Any) -> bool:
    """Whether ``db`` is a file inside the site's trees (SQLite), put in place only after its tree is."""
    return bool(db.path)


def streams(db: Any) -> bool:
    """Whether a live pull restores ``db`` on the new host as its dump arrives: a database server's, yes; a
    database file inside a tree (SQLite) no: the tree is being copied at the same time, so its file is put in
    place once both have arrived."""
    return not in_a_tree(db)


def empty(conn: Any, db: Any, compose: list[str]) -> None:
    """Drop ``db`` on ``conn``'s host (all its data goes) and create it empty."""
    eng = engine(db.engine)
    run_command(conn, eng.drop_command(db, compose))
    run_command(conn, eng.create_command(db, compose))


def restore_file(conn: Any, db: Any, compose: list[str], file: str, jobs: int = 1) -> None:
    """Restore ``db`` afresh on ``conn``'s host from its dump ``file`` there (dropped, created empty, restored)."""
    empty(conn, db, compose)
    run_command(conn, engine(db.engine).restore_from_file_command(db, compose, file, jobs=jobs))


def prepare_new_host(ctx: RunContext, new: Any, work: str) -> list[str]:
    """Make the run's work directory, stop the new host's writers and start its database servers; return the
    host's Compose command. (Each database a live pull restores as it arrives is emptied by its own pull.)"""
    new.run(f"install -d -m 0700 {shlex.quote(work)}", hide=True, in_stream=False, timeout=60)
    return apps.stop_writers(new, ctx.inv, backup_timer=False, databases_up=True).compose


class After:
    """Actions each run once all the events it waits for have happened, by the thread that reports the last one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[set[str], Callable[[], None]]] = []

    def add(self, events: set[str], action: Callable[[], None]) -> None:
        with self._lock:
            self._waiting.append((set(events), action))

    def happened(self, event: str) -> None:
        with self._lock:
            for events, _ in self._waiting:
                events.discard(event)
            ready = [action for events, action in self._waiting if not events]
            self._waiting = [(events, action) for events, action in self._waiting if events]
        for action in ready:
            action()


def run_all(workers: int, jobs: list[Callable[[], None]]) -> None:
    """Run ``jobs`` ``workers`` at a time; raise the first failure once all have ended (none is left running)."""
    if not jobs:
        return
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(job) for job in jobs]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


def data_live(ctx: RunContext) -> dict[str, Any]:
    """Freeze the old host's writers, then pull every dump and tree from it onto the new host."""
    with ThreadPoolExecutor(2) as pool:  # both hosts at once; the old host's failure is the one said first
        old_conn, new_conn = pool.submit(ctx.old_conn), pool.submit(ctx.new_conn)
        old, new = old_conn.result(), new_conn.result()
    ctx.say("data", f"stopping the writers on the old host {old.host}")

    def stop_old() -> list[str]:
        stopped = apps.stop_writers(old, ctx.inv, hand_built=ctx.old_hand_built, databases_up=True)
        ctx.journal.record(old_writers_stopped=True, old_backup_timer_was_on=stopped.backup_timer)
        return stopped.compose

    work = workdir(ctx)
    old_record = ctx.state["old"]
    # The old host's writers stop, the new host gets ready to restore and the link between them is made, all at
    # once; nothing is read from the old host before its writers have stopped.
    with ThreadPoolExecutor(2) as pool:
        old_ready = pool.submit(stop_old)
        new_ready = pool.submit(prepare_new_host, ctx, new, work)
        with transfer.link(old, old_record["host_key"], new, src_address=old_record["address"]) as link:
            pull = _LivePull(ctx, old, new, link, old_ready.result(), new_ready.result(), work)
            pull.run()
    ctx.results[NEW_HOST_READY] = pull.compose_new
    ctx.results[OLD_HOST_READY] = pull.compose_old
    return {"source": "live", "dumps": pull.dumps,
            "trees_copied": pull.copies, "rpo_seconds": 0,
            "rpo_basis": f"final sync from the old host {old_record['address']}: nothing lost"}


@dataclass
class _LivePull:
    """One live pull over ``link`` once the old host's writers are stopped, and what it gathered."""

    ctx: RunContext
    old: Any
    new: Any
    link: transfer.Link
    compose_old: list[str]
    compose_new: list[str]
    work: str
    dumps: dict[str, dict[str, Any]] = field(default_factory=dict)
    copies: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run(self) -> None:
        """Every dump (restored as it arrives where :func:`streams`) and tree copy, all at once; a database file
        inside a tree put in place once its dump and the trees around it have arrived."""
        ctx = self.ctx
        self.after = After()
        for db in ctx.inv.databases:
            if in_a_tree(db):
                around = {p for p in trees(ctx) if inside(db.path, p)}
                self.after.add({f"dump {db.name}", *(f"tree {p}" for p in around)}, lambda db=db: self.place(db))
        run_all(LIVE_PARALLEL, [lambda db=db: self.dump(db) for db in ctx.inv.databases]
                + [lambda p=p: self.tree(p) for p in trees(ctx)])

    def dump(self, db: Any) -> None:
        ctx, eng = self.ctx, engine(db.engine)
        path = posixpath.join(self.work, f"{db.name}.dump")
        # uncompressed: it only crosses the hosts' network, and compressing was the slowest part of a pg_dump
        dump = eng.dump_command(db, self.compose_old, compress=LIVE_COMPRESS)

        def progress(done: int, total: int | None) -> None:
            ctx.bytes("data", db.name, done, total)

        if not streams(db):
            pulled = transfer.pull_dump(self.link, dump, self.new, path, progress=progress)
            self.dumps[db.name] = {"file": path, "bytes": pulled.bytes, "sha256": pulled.sha256}
            ctx.say("data", f"database {db.name}: {pulled.bytes} bytes in {pulled.seconds:.1f} s")
            self.after.happened(f"dump {db.name}")
            return
        empty(self.new, db, self.compose_new)  # here, not before every pull: the other pulls need not wait for it
        pulled = transfer.pull_dump_restoring(self.link, dump, self.new, path,
                                              eng.restore_command(db, self.compose_new), progress=progress)
        self.dumps[db.name] = {"file": path, "bytes": pulled.bytes, "sha256": pulled.sha256, "restored": pulled.restored}
        if pulled.restored:
            ctx.say("data", f"database {db.name}: {pulled.bytes} bytes in {pulled.seconds:.1f} s, restored on the "
                            "new host as they arrived")
        else:
            self.left_to_restore(db, f"{pulled.bytes} bytes in {pulled.seconds:.1f} s; restoring them as they arrived",
                                 pulled.restore_error)

    def tree(self, path: str) -> None:
        ctx = self.ctx
        # the SQLite files inside come with their dump: not copied twice
        copy = transfer.pull_tree(self.link, path, self.new, exclude=sorted(database_files(ctx)),
                                  progress=lambda done, total: ctx.bytes("data", path, done, total))
        self.copies[path] = {"bytes": copy.bytes, "files": copy.files, "seconds": round(copy.seconds, 2)}
        ctx.say("data", f"tree {path}: {copy.files} files, {copy.bytes} bytes")
        self.after.happened(f"tree {path}")

    def place(self, db: Any) -> None:
        """Put the database file ``db`` in place on the new host from its dump (its trees are copied). If that
        fails, the restore step restores it from the file."""
        entry = self.dumps[db.name]
        try:
            restore_file(self.new, db, self.compose_new, entry["file"])
        except RelaunchError as exc:
            self.left_to_restore(db, "putting it in place", str(exc))
        else:
            entry["restored"] = True
            self.ctx.say("data", f"database {db.name}: put in place at {db.path}")

    def left_to_restore(self, db: Any, what: str, error: str) -> None:
        """Record that restoring ``db`` in this step (``what``) failed with ``error``: the restore step restores
        it from its file."""
        masked = self.ctx.mask(error)
        self.dumps[db.name].update(restored=False, restore_error=masked[:600])
        self.ctx.say("data", f"database {db.name}: {what} failed ({masked[:300]}): the restore step restores the file")


def data_any(ctx: RunContext) -> dict[str, Any]:
    """The data step as the run's source says; a live sync that loses the old host falls back to the newest
    backup when the run allows it (``fallback_to_backup``), else stops saying how to go on."""
    if ctx.state.get("source") == "backup":
        return data_backup(ctx)
    try:
        return data_live(ctx)
    # a host lost mid-way shows as any of these: a command's error, a dead socket, paramiko's or invoke's own
    except (RelaunchError, OSError, invoke.exceptions.Failure, *CONNECTION_ERRORS) as exc:
        site = ctx.inv.site
        if not ctx.options.get("fallback_to_backup"):
            raise RelaunchError(
                f"the final sync from the old host failed: {ctx.mask(str(exc))}\nNothing was switched. When the old "
                f"host answers again: `fab rebuild --resume --site {site}`; to go on from the newest backup instead: "
                f"`fab rebuild --resume --source backup --site {site}`") from exc
        ctx.say("data", f"the final sync failed ({ctx.mask(str(exc))[:200]}); falling back to the newest backup")
        ctx.drop_conn("old")
        out = data_backup(ctx, old_host=False)
        out["source_reason"] = f"fell back to the newest backup: the final sync failed ({ctx.mask(str(exc))[:160]})"
        return out


#: Backups a rebuild tries, newest first, when no backup was asked for and the newer ones fail their checks.
BACKUP_CANDIDATES = 5


def data_backup(ctx: RunContext, old_host: bool | None = None) -> dict[str, Any]:
    """Have the new host fetch a backup and check it against its manifest: from the old host's backup directory
    when it answers (``old_host``; see :mod:`.old_host_backup`), else from the off-host store.

    ``old_host`` defaults to whether this is a rebuild: a drill rehearses from the store alone, never production.
    """
    if old_host is None:
        old_host = ctx.journal.kind == "rebuild"
    new = ctx.new_conn()
    work = workdir(ctx)
    new.run(f"install -d -m 0700 {shlex.quote(work)}", hide=True, in_stream=False, timeout=60)
    wanted = ctx.options.get("backup_id") or ctx.state.get("backup_id")
    pulled = old_host_backup.fetch_from_old_host(ctx, new, wanted, posixpath.join(work, "old-host")) if old_host else None
    if pulled is not None:
        directory, backup_id, held = pulled
        check = offsite.verify_remote_dir(new, directory)
        if check.ok:
            return _backup_outputs(ctx, new, directory, [{"id": i, "time": None} for i in held],
                                   f"the old host's {old_host_backup.BACKUP_ROOT}")
        ctx.say("data", f"backup {backup_id} from the old host does not match its manifest ({check.describe()[:200]}): "
                        "using the off-host store")
    return _data_from_store(ctx, new, work)


def _data_from_store(ctx: RunContext, new: Any, work: str) -> dict[str, Any]:
    """The new host fetches a backup from the off-host store itself.

    Without a backup asked for (``--backup ID``, a drill's canary backup), the newest one
    whose every artifact matches its manifest's sha256 is used: a backup that fails the
    check (or cannot be fetched) is removed from the new host and the next older one tried,
    up to :data:`BACKUP_CANDIDATES`; each one skipped is journaled and named in the RPO's
    basis, so the report says which backup was used and why not a newer one. An asked-for
    backup that fails is a hard failure.
    """
    skipped: list[dict[str, str]] = []
    with store_access(ctx, new) as repo:
        found = sorted((s for s in offsite.snapshots(new, repo, ctx.inv.site) if s.get("id")), key=lambda s: s["id"])
        wanted = ctx.options.get("backup_id") or ctx.state.get("backup_id")
        if not wanted:
            if not found:
                raise RelaunchError(f"the off-host store {ctx.inv.backups.offsite.repository} holds no backup of "  # type: ignore[union-attr]
                                    f"site {ctx.inv.site!r}; nothing to rebuild from")
            candidates = [s["id"] for s in reversed(found)][:BACKUP_CANDIDATES]
        elif wanted not in {s["id"] for s in found}:
            raise RelaunchError(f"the off-host store holds no backup {wanted!r} of site {ctx.inv.site!r} "
                                f"(it holds {', '.join(s['id'] for s in found[-5:]) or 'none'}{' ...' if len(found) > 5 else ''})")
        else:
            candidates = [wanted]
        for i, backup_id in enumerate(candidates):
            dest = posixpath.join(work, "backup" if i == 0 else f"backup-{i}")
            ctx.say("data", f"fetching backup {backup_id} from the off-host store onto the new host")
            try:
                directory = offsite.fetch(new, backup_id, dest, repo, site=ctx.inv.site)
                check = offsite.verify_remote_dir(new, directory)
                problem = None if check.ok else "does not match its manifest: " + "; ".join(check.problems)
            except RelaunchError as exc:
                problem = f"could not be fetched: {ctx.mask(str(exc))[:600]}"
            if problem is None:
                break
            if wanted:
                raise RelaunchError(f"backup {backup_id} fetched onto {new.host} {problem}")
            skipped.append({"id": backup_id, "reason": problem[:600]})
            ctx.journal.record(backups_skipped=skipped)
            ctx.say("data", f"backup {backup_id} {problem[:300]}; trying the next older one")
            new.run(f"rm -rf -- {shlex.quote(dest)}", hide=True, in_stream=False, warn=True, timeout=600)
        else:
            raise RelaunchError(f"none of the {len(candidates)} newest backups of site {ctx.inv.site!r} passed its "
                                "checks: " + "; ".join(f"{s['id']} {s['reason'][:200]}" for s in skipped))
    return _backup_outputs(ctx, new, directory, [{"id": s["id"], "time": s.get("time")} for s in found],
                           "the off-host store", skipped)


def _backup_outputs(ctx: RunContext, new: Any, directory: str, held: list[dict[str, Any]], origin: str,
                    skipped: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """What the data step journals for a backup unpacked (and checked) in ``directory`` on the new host."""
    manifest = parse(new.run(f"cat {shlex.quote(posixpath.join(directory, MANIFEST))}", hide=True,
                             in_stream=False, timeout=60).stdout)
    return {**backup_facts(manifest, directory, f" from {origin}", skipped), "backup_origin": origin, "store_backups": held}


def backup_facts(manifest: Manifest, directory: str, where: str = "", skipped: list[dict] | None = None) -> dict[str, Any]:
    """What the later steps need of a backup checked in ``directory`` on the new host: dumps, archives, fingerprints, RPO."""
    fingerprints = {a.name: json.dumps(a.extra["fingerprint"]) for a in manifest.artifacts
                    if a.kind == "database" and a.extra.get("fingerprint")}
    dumps = {a.name: {"file": posixpath.join(directory, a.file), "bytes": a.size, "sha256": a.sha256}
             for a in manifest.artifacts if a.kind == "database"}
    archives = {a.name: {"file": posixpath.join(directory, a.file), "paths": list(a.extra.get("paths") or []),
                         "excluded": list(a.extra.get("excluded") or [])} for a in manifest.artifacts if a.kind == "archive"}
    # how much a rebuild from it loses: its age now (never below 0: a drill's canary backup is seconds old)
    age = max(datetime.now(UTC) - manifest.finished_at, timedelta(0))
    basis = f"backup {manifest.id}{where} (taken {manifest.finished_at.isoformat(timespec='seconds')}), its age"
    if skipped:
        basis += "; newer backup(s) skipped: " + "; ".join(f"{s['id']} {s['reason'][:200]}" for s in skipped)
    return {"source": "backup", "backup_id": manifest.id, "images": manifest.images, "backup_dir": directory,
            "source_fingerprints": fingerprints, "dumps": dumps, "archives": archives,
            "rpo_seconds": round(age.total_seconds()), "backups_skipped": list(skipped or []), "rpo_basis": basis}
