"""Restore and verify: fresh empty databases filled from the dumps, trees put in place, then proved equal to the source.

Restore runs with the new host's apps stopped and only its database servers up. Each
database is dropped, created empty and restored from its dump file (in parallel across
databases; PostgreSQL also with pg_restore's own jobs), except one a live data step
already restored as its dump arrived (``restored`` in the data step's record of it). A backup's archives are
extracted with owners and modes kept (live trees are already in place: the data step
copied them).

Verify computes each database's fingerprint on the new host and compares it with the
source's, and each tree's listing (every file's type, size, mode, owner and sha256) with
the source's: a backup's come from its manifest and archives; a live source's are taken
on the old host (its writers stopped since the data step) at the same time as the new
host's, each host reading its own disks; a very large tree's files are
hashed as a sample seeded by the run's id (:func:`.data.sampling`), which the report says.
Any difference stops the run
before anything is switched, naming the database and table or the path.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from typing import Any

from relaunch import apps, transfer
from relaunch.databases import Fingerprint, engine
from relaunch.errors import RelaunchError
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.steps.data import (
    NEW_HOST_READY,
    OLD_HOST_READY,
    PARALLEL,
    database_files,
    in_a_tree,
    restore_file,
    run_all,
    sampling,
    trees,
    workdir,
)
from relaunch.remote import CONNECTION_ERRORS

log = logging.getLogger(__name__)

#: pg_restore workers per PostgreSQL database.
PG_JOBS = 2


#: Attempts of the restore when the SSH connection to the new host drops under it (the restore is idempotent).
RESTORE_ATTEMPTS = 3

# What an attempt cut off by a dropped connection may have left running on the host: every process that
# still holds a file of the run's work directory open (a client reading a dump, tar reading an archive).
# One python3 reads every process's fds itself: a shell loop forking readlink once per fd took 0.3 s on a
# sandbox host with 400 fds, and grows with a real host's thousands.
_KILL_LEFTOVERS = r"""
import os, signal, sys
inside = sys.argv[1].rstrip("/") + "/"
me = os.getpid()
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == me:
        continue
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        continue
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(inside):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
"""


def kill_leftovers_command(work: str) -> str:
    """The host command that kills every process holding a file below ``work`` open (exit 0 whatever it found)."""
    return shlex.join(["python3", "-c", _KILL_LEFTOVERS, work])


def restore(ctx: RunContext) -> dict[str, Any]:
    """Restore every database from its dump file and, for a backup, extract every archive.

    Every attempt first stops what an attempt cut off before it left running on the host (a
    dropped connection, or Ctrl-C/SIGTERM before a ``--resume``: sshd does not stop a
    session's commands when the session goes, so a client could go on writing into the
    database the new attempt recreates). When the SSH connection to the new host drops
    during the restore, the whole restore runs again on a new connection (each database
    dropped and restored afresh, each tree replaced whole), up to :data:`RESTORE_ATTEMPTS`;
    any other failure stops the step at once.
    """
    for attempt in range(1, RESTORE_ATTEMPTS + 1):
        began = None
        try:
            ctx.new_conn().run(kill_leftovers_command(workdir(ctx)), hide=True,
                               in_stream=False, warn=True, timeout=120)
            began = ctx.transport("new")
            return _restore_once(ctx)
        except Exception as exc:
            if attempt == RESTORE_ATTEMPTS or not (ctx.conn_lost("new", since=began)
                                                   or isinstance(exc, CONNECTION_ERRORS)):
                raise
            ctx.say("restore", f"the SSH connection to the new host dropped ({ctx.mask(str(exc))[:200]}); "
                    f"restoring again on a new connection (attempt {attempt + 1} of {RESTORE_ATTEMPTS})")
            ctx.drop_conn("new")
    raise AssertionError("unreachable")


def _restore_once(ctx: RunContext) -> dict[str, Any]:
    new = ctx.new_conn()
    # a live data step of this same process left the new host so (once: an attempt after a dropped connection
    # does it again, the host may have rebooted)
    compose = ctx.results.pop(NEW_HOST_READY, None)
    if compose is None:
        compose = apps.stop_writers(new, ctx.inv, backup_timer=False, databases_up=True).compose
    dumps = ctx.state["dumps"]

    def one_db(db: Any) -> None:
        if dumps[db.name].get("restored"):
            ctx.say("restore", f"database {db.name}: restored in the data step")
            return
        restore_file(new, db, compose, dumps[db.name]["file"], jobs=PG_JOBS if db.engine == "postgresql" else 1)
        ctx.say("restore", f"database {db.name} restored")

    def one_archive(app: str, archive: dict[str, Any]) -> None:
        q = shlex.quote
        # Each tree is replaced whole: nothing the archive does not hold may survive (the bootstrap's leftovers).
        script = (
            f"set -e; for d in {' '.join(q(p) for p in archive['paths'])}; do "
            f'[ -d "$d" ] && find "$d" -mindepth 1 -delete; done; '
            f"tar -xzpf {q(archive['file'])} -C / --numeric-owner --same-owner"
        )
        run = new.run(script, warn=True, hide=True, in_stream=False, timeout=3600)
        if not run.ok:
            raise RelaunchError(f"{new.host}: extracting {archive['file']} for {app} failed: {(run.stdout + run.stderr)[-1200:]}")
        ctx.say("restore", f"files of {app} restored")

    # The database servers' restores and the trees at once; a database file inside a tree (SQLite) after the trees.
    run_all(PARALLEL, [lambda a=a, app=app: one_archive(app, a) for app, a in (ctx.state.get("archives") or {}).items()]
            + [lambda db=db: one_db(db) for db in ctx.inv.databases if not in_a_tree(db)])
    run_all(PARALLEL, [lambda db=db: one_db(db) for db in ctx.inv.databases if in_a_tree(db)])
    return {}


def verify(ctx: RunContext) -> dict[str, Any]:
    """Compare every database's fingerprint and every tree's listing on the new host with the source's.

    The fingerprints and listings are taken in parallel (each reads its own database or tree), a live
    source's on the old host at the same time as the new host's (:class:`_Source`).
    """
    new = ctx.new_conn()
    compose = apps.compose_command(new)
    skip = database_files(ctx)
    live = _Source(ctx) if ctx.state.get("source") == "live" else None
    expected = {} if live else _archive_listings(ctx, new)
    got_fp: dict[str, Fingerprint] = {}
    got_listing: dict[str, transfer.Listing] = {}

    def one_db(db: Any) -> None:
        got_fp[db.name] = engine(db.engine).fingerprint(new, db, compose)

    def one_tree(path: str) -> None:
        got_listing[path] = transfer.tree_listing(new, path, sampling(ctx), exclude=sorted(skip))

    # each host reads PARALLEL of its databases and trees at once
    run_all(PARALLEL * (2 if live else 1), [lambda db=db: one_db(db) for db in ctx.inv.databases]
            + (live.fingerprint_jobs() if live else []) + [lambda p=p: one_tree(p) for p in trees(ctx)]
            + (live.listing_jobs() if live else []))
    outputs: dict[str, Any] = {"verified": True}
    if live:
        source, expected = live.fingerprints, live.listings
        ctx.save_artifact("source-listings.json",
                          {path: {p: list(e) for p, e in lst.items()} for path, lst in expected.items()})
        outputs["source_fingerprints"] = source
    else:
        source = ctx.state.get("source_fingerprints") or {}
    databases: list[dict[str, Any]] = []
    problems: list[str] = []
    for db in ctx.inv.databases:
        got = got_fp[db.name]
        entry: dict[str, Any] = {"name": db.name, "engine": db.engine, "tables": len(got.tables), "rows": got.rows,
                                 "fingerprint_match": None, "mismatches": []}
        if db.name in source:
            diff = Fingerprint.from_json(source[db.name]).diff(got)
            entry["fingerprint_match"] = not diff
            entry["mismatches"] = diff
            problems += [f"database {db.name}: {line}" for line in diff]
        else:
            entry["mismatches"] = ["the source has no fingerprint of it (only its presence is checked)"]
        databases.append(entry)
    files: list[dict[str, Any]] = []
    for path in trees(ctx):
        actual = got_listing[path]
        want = expected.get(path)
        diff = transfer.compare_listings(want, actual) if want is not None else [f"no source listing of {path}"]
        size = sum(e.size for e in actual.values() if e.type == "f")
        files.append({"path": path, "files": sum(1 for e in actual.values() if e.type == "f"), "bytes": size,
                      "match": not diff, "method": sampling(ctx).describe(actual), "mismatches": diff[:20]})
        problems += [f"{path}: {line}" for line in diff]
    ctx.journal.record(verify_databases=databases, verify_files=files)
    if problems:
        shown = "\n  ".join(problems[:30])
        raise RelaunchError(f"the restored data differs from its source ({len(problems)} difference(s)); nothing "
                            f"was switched:\n  {shown}")
    return outputs


def _archive_listings(ctx: RunContext, new: Any) -> dict[str, Any]:
    """Every tree's listing as the backup's archives hold it (read on the new host)."""
    out: dict[str, Any] = {}
    for archive in (ctx.state.get("archives") or {}).values():
        out.update(transfer.archive_listing(new, archive["file"], archive["paths"]))
    return out



class _Source:
    """The old host's side of a live rebuild's verify: every database's fingerprint and every tree's listing, read
    there while its writers stay stopped (since the data step), as jobs to run beside the new host's.

    A failure to read it (the old host lost since the final sync) stops the step saying how to go on: nothing
    has been switched.
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.fingerprints: dict[str, str] = {}
        self.listings: dict[str, transfer.Listing] = {}
        try:
            self.old = ctx.old_conn()
            self.began = ctx.transport("old")  # a reopened connection dropped in between (RunContext.conn_lost)
            compose = ctx.results.pop(OLD_HOST_READY, None)
            if compose is None:  # a resumed run: the old host may have rebooted since (its writers stay disabled)
                apps.start_databases(self.old, ctx.inv)
                compose = apps.compose_command(self.old)
        except (RelaunchError, OSError, *CONNECTION_ERRORS) as exc:
            raise self.lost(exc) from exc
        self.compose: list[str] = compose

    def fingerprint_jobs(self) -> list[Callable[[], None]]:
        return [lambda db=db: self.guarded(self.fingerprint, db) for db in self.ctx.inv.databases]

    def listing_jobs(self) -> list[Callable[[], None]]:
        return [lambda p=p: self.guarded(self.listing, p) for p in trees(self.ctx)]

    def guarded(self, job: Callable[[Any], None], arg: Any) -> None:
        try:
            job(arg)
        except Exception as exc:  # a dead host shows as a socket's error, or as a command's once its transport died
            if isinstance(exc, (OSError, *CONNECTION_ERRORS)) or self.ctx.conn_lost("old", since=self.began):
                raise self.lost(exc) from exc
            raise

    def fingerprint(self, db: Any) -> None:
        started = time.monotonic()
        self.fingerprints[db.name] = engine(db.engine).fingerprint(self.old, db, self.compose).to_json()
        log.info("%s: fingerprint of %s in %.1f s", self.old.host, db.name, time.monotonic() - started)

    def listing(self, path: str) -> None:
        started = time.monotonic()
        self.listings[path] = transfer.tree_listing(self.old, path, sampling(self.ctx),
                                                    exclude=sorted(database_files(self.ctx)))
        log.info("%s: listing of %s in %.1f s", self.old.host, path, time.monotonic() - started)

    def lost(self, exc: BaseException) -> RelaunchError:
        site = self.ctx.inv.site
        return RelaunchError(
            f"the old host could not be read to prove the copy ({self.ctx.mask(str(exc))[:300]}); nothing was "
            f"switched. When the old host answers again: `fab rebuild --resume --site {site}`; to go on from the "
            f"newest backup instead: `fab rebuild --resume --source backup --site {site}`")
