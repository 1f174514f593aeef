"""Golden images: a snapshot of a drill's scratch host after its bootstrap, before any data, to start rebuilds from.

**Making one** (``fab drill --golden``, the ``golden`` step between bootstrap and restore):
the scratch host is cleaned of everything that is a secret or data — the apps' containers
and volumes (their configuration holds the env files' values), the native databases'
users and databases (password hashes), the rendered secret files, the fetched backup,
restic's cache, the stamps that record a secret's checksum — and of what makes it *this*
host: its SSH host keys, cloud-init's state (the user-data held the first host key), the
host-key rotation stamp. Those three are moved into ``/run`` (a tmpfs, never part of a
disk snapshot) and put back afterwards, because the drill goes on with this host. A scan
for every secret value over the directories where rendered files, state and logs live must
find nothing, else no snapshot is taken. Then the snapshot, tagged ``relaunch-golden``,
``relaunch-golden-<site>`` and ``relaunch-recipe-<hash>`` (:func:`recipe_hash`: the
runbooks, templates and inventory that made it). The time it takes is reported as the
``golden`` phase and not counted in the RTO.

**Which steps it holds** is measured, not assumed: after the snapshot the drill bootstraps
the same host again from the cleaned state (it needs its secrets, users and apps back
anyway) — exactly what a rebuild from the snapshot does — and the steps that report no
change are the ones the image holds. Their indices in the run order go into a
``relaunch-held-...`` tag (the recipe fixes that order). Then the backup is fetched again
(the clean removed it), and every older golden snapshot of the site is deleted: one is kept.

**Using one** (``fab rebuild``, and a drill without ``--golden``): preflight picks the newest
snapshot of the site whose recipe tag is the current recipe's hash and which lives in the
target region (:func:`choose`); a snapshot made from other runbooks, templates or inventory
is stale and never used. The Droplet boots from it, gets a new host key as usual (the
rotation stamp was not in the image), and the bootstrap runs every step as always: the held
ones must report no change (:func:`check_bootstrap`). A held step that changed means the
image was not what its tags said: a drill fails; a rebuild goes on (the runbooks made the
host right) and its report says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relaunch import render
from relaunch.cloud.models import Snapshot
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.runbooks import RUNBOOKS_DIR, merged_files, run_steps
from relaunch.runbooks import Step as RunbookStep
from relaunch.runbooks import _Script  # the one way to hand a script to Fabric's stdin

if TYPE_CHECKING:
    from relaunch.bootstrap import BootstrapResult
    from relaunch.pipeline.context import RunContext

log = logging.getLogger(__name__)

GOLDEN_TAG = "relaunch-golden"
RECIPE_PREFIX = "relaunch-recipe-"
HELD_PREFIX = "relaunch-held-"
#: What the golden host says about itself (no secret in it).
HOST_FILE = "/var/lib/relaunch/golden.json"
#: Where the host's own identity waits while the snapshot is taken (a tmpfs: never in a snapshot).
ASIDE = "/run/relaunch-golden"
_VERSION = b"relaunch-golden-recipe-v1\n"


def site_tag(site: str) -> str:
    return f"{GOLDEN_TAG}-{site}"


def recipe_tag(recipe: str) -> str:
    return RECIPE_PREFIX + recipe[:40]


def held_tag(indices: Iterable[int]) -> str:
    """The tag listing the held steps by their index in the run order (``relaunch-held-none`` for none)."""
    ids = sorted(set(indices))
    return HELD_PREFIX + ("-".join(str(i) for i in ids) if ids else "none")


def parse_held(tags: Iterable[str]) -> list[int] | None:
    """The held step indices of a snapshot's tags; None when it has no held tag (a snapshot not finished)."""
    for tag in tags:
        if tag.startswith(HELD_PREFIX):
            rest = tag[len(HELD_PREFIX):]
            if rest == "none":
                return []
            if re.fullmatch(r"[0-9]+(-[0-9]+)*", rest):
                return sorted({int(i) for i in rest.split("-")})
    return None


# --- the recipe ---------------------------------------------------------------------------


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def recipe_hash(inv: Inventory, runbooks_dir: Path | None = None, templates_dir: Path | None = None) -> str:
    """Given a site's inventory, return the sha256 (hex) of what a bootstrap is made from.

    That is every runbook that runs (relaunch's and the site's own, in order), every file of
    the template directories (the site's own and relaunch's), and the inventory as data. Not
    in it: the provider's tags (they never reach the host; a drill adds its own), secret
    values (never in an image) and where the checkout lives (paths under the inventory's
    directory are taken relative to it, so two clones agree).
    """
    digest = hashlib.sha256(_VERSION)

    def add(label: str, content: bytes) -> None:
        digest.update(f"{label}\0{len(content)}\0".encode())
        digest.update(content)

    for path, own in merged_files(runbooks_dir or RUNBOOKS_DIR, inv.own_dir("runbooks")):
        add(f"runbook:{'site' if own else 'relaunch'}:{path.name}", path.read_bytes())
    own_templates = inv.own_dir("templates")
    for kind, root in (("site", own_templates), ("relaunch", templates_dir or render.TEMPLATES_DIR)):
        if root is None:
            continue
        for path in _files_under(root):
            add(f"template:{kind}:{path.relative_to(root).as_posix()}", path.read_bytes())
    data = inv.model_dump(mode="json")
    data["provider"] = {k: v for k, v in data["provider"].items() if k != "tags"}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    base = getattr(inv, "_base_dir", None)
    if base is not None:
        text = text.replace(str(Path(base).resolve().parent), "<root>")
    add("inventory", text.encode())
    return digest.hexdigest()


# --- choosing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """The golden snapshot a run starts from (``snapshot`` None: the base image) and why."""

    snapshot: Snapshot | None
    reason: str
    stale: tuple[int, ...] = ()

    def to_json(self, step_names: list[str] | None = None) -> dict[str, Any] | None:
        if self.snapshot is None:
            return None
        held = parse_held(self.snapshot.tags) or []
        return {"id": self.snapshot.id, "name": self.snapshot.name, "created_at": self.snapshot.created_at,
                "held_indices": held}


def _created(s: Snapshot) -> str:
    return s.created_at or ""


def choose(snapshots: Iterable[Snapshot], site: str, recipe: str, region: str | None = None) -> Choice:
    """Given the account's snapshots, return the newest finished golden snapshot of ``site`` made from ``recipe``.

    Finished: it carries a held tag. A golden snapshot of the site with another recipe tag is
    stale and never chosen (listed in ``stale``); one outside ``region`` (when known) cannot
    start a Droplet there.
    """
    mine = [s for s in snapshots if site_tag(site) in s.tags]
    stale = tuple(s.id for s in mine if recipe_tag(recipe) not in s.tags)
    fresh = [s for s in mine if recipe_tag(recipe) in s.tags and parse_held(s.tags) is not None]
    if region is not None:
        fresh = [s for s in fresh if not s.regions or region in s.regions]
    if not fresh:
        if stale:
            return Choice(None, f"no golden snapshot of {site} matches the current runbooks, templates and inventory "
                          f"({len(stale)} stale: made from others)", stale)
        return Choice(None, f"no golden snapshot of {site} (make one with `fab drill --golden`)")
    best = max(fresh, key=lambda s: (_created(s), s.id))
    return Choice(best, f"golden snapshot {best.name} ({best.id}, made {best.created_at}) matches the current "
                  "runbooks, templates and inventory", stale)


def choose_for(ctx: RunContext) -> dict[str, Any]:
    """Preflight's part: the golden snapshot this run starts from (``golden_image``), or why none.

    ``options['golden']`` ``'off'`` (``--no-golden``) or ``'make'`` (``drill --golden``: a fresh
    bootstrap proves the runbooks) chooses none; ``'use'`` (the default) looks.
    """
    wanted = ctx.options.get("golden", "use")
    recipe = recipe_hash(ctx.inv)
    if wanted == "off":
        return {"golden_image": None, "golden_reason": "not used (--no-golden)", "recipe": recipe}
    if wanted == "make":
        return {"golden_image": None, "golden_reason": "not used: this drill bootstraps from the base image and "
                "makes a new golden snapshot (--golden)", "recipe": recipe}
    region = ctx.options.get("region") or ctx.inv.provider.region
    choice = choose(ctx.cloud.list_snapshots(), ctx.inv.site, recipe, region)
    ctx.say("preflight", choice.reason)
    return {"golden_image": choice.to_json(), "golden_reason": choice.reason, "recipe": recipe}


def describe(state: dict[str, Any]) -> str:
    """One line for a plan or report: which image the new host starts from."""
    image = state.get("golden_image")
    if image:
        return f"golden snapshot {image['name']} ({image['id']}, made {image.get('created_at')})"
    return state.get("golden_reason") or "the base image"


# --- checking a bootstrap on a golden host -------------------------------------------------------


def check_bootstrap(ctx: RunContext, result: BootstrapResult) -> dict[str, Any]:
    """After the bootstrap of a host started from a golden snapshot: the held steps must have reported no change.

    Return the check for the journal (``golden_check``). Raise RelaunchError when a held step
    changed something in a drill (the image is not what its tags say); a rebuild goes on and
    reports it. Also raise when the host's own golden file names another recipe.
    """
    image = ctx.state.get("golden_image")
    if not image:
        return {}
    conn = ctx.new_conn()
    run = conn.run(f"cat {HOST_FILE}", warn=True, hide=True, in_stream=False, timeout=30)
    facts = json.loads(run.stdout) if run.ok and run.stdout.strip() else {}
    ran = [r.step.name for r in result.runbook.steps]
    held = [ran[i] for i in image.get("held_indices", []) if i < len(ran)]
    changed = [name for name in held if name in result.runbook.changed]
    check: dict[str, Any] = {"snapshot": image["id"], "held": held, "held_changed": changed,
                             "other_changed": [n for n in result.runbook.changed if n not in held],
                             "recipe_on_host": facts.get("recipe"), "passed": not changed}
    if facts.get("recipe") != ctx.state.get("recipe"):
        check["passed"] = False
        check["problem"] = (f"the host started from golden snapshot {image['id']} says it was made from recipe "
                            f"{str(facts.get('recipe'))[:12]}, not the current {str(ctx.state.get('recipe'))[:12]}")
    elif changed:
        check["problem"] = (f"golden snapshot {image['id']} holds steps {', '.join(held)}, but {', '.join(changed)} "
                            "changed the host")
    if check.get("problem"):
        ctx.say("bootstrap", check["problem"])
        if ctx.journal.kind != "rebuild":
            raise RelaunchError(check["problem"] + ": the image is not what its tags say; make a new one with "
                                f"`fab drill --golden --site {ctx.inv.site}`")
    else:
        ctx.say("bootstrap", f"golden snapshot {image['id']}: its {len(held)} held step(s) reported no change")
    return {"golden_check": check}


# --- making one ---------------------------------------------------------------------------------


def clean_script(inv: Inventory, work_dirs: list[str]) -> str:
    """The shell script that leaves the host holding no secret, no data and no identity (see the module doc).

    Every value is quoted. The host's identity (SSH host keys, cloud-init's state, the
    rotation stamp) goes to ``ASIDE``; :func:`restore_script` puts it back.
    """
    q = shlex.quote
    lines = [f"install -d -m 0700 {ASIDE}"]
    compose = [a for a in inv.apps if a.kind == "compose"]
    if compose:
        lines.append(f"read -ra compose < {render.RELAUNCH_DIR}/compose-command")
        lines.append("export COMPOSE_HTTP_TIMEOUT=600 DOCKER_CLIENT_TIMEOUT=600")
        for app in compose:
            lines.append(f'"${{compose[@]}}" -p {q(app.name)} -f {q(f"/srv/{app.name}/compose.yml")} '
                         f"--env-file {q(render.env_file_path(app.name))} down -v --remove-orphans")
    if compose:
        # Docker stays stopped until the snapshot is taken (restore_script starts it): with no container left,
        # what it and containerd remove here is only state, made anew at their next start.
        # - containerd's metadata database keeps the removed containers' specs (their env: secrets) in its freed
        #   pages (found by the scan in a sandbox run);
        # - dockerd renames runtimes/ (and tmp/) at start: on a host booted from the snapshot they would come from
        #   the image, and where the root is an overlay (a sandbox Droplet is a container) a directory of a lower
        #   layer cannot be renamed (EXDEV): docker did not start (a sandbox run). A real Droplet's disk has no
        #   such limit; leaving them out is right on both.
        lines += ["systemctl stop docker.socket docker.service containerd.service",
                  "rm -f /var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db",
                  "rm -rf /var/lib/docker/runtimes /var/lib/docker/tmp /var/lib/docker/tmp-old "
                  "/var/lib/docker/gen-runtimes*"]
    for app in inv.apps:
        if app.kind == "systemd":
            lines.append(f"systemctl stop {q(app.name + '.service')} || true  # it may not have started")
        lines.append(f"rm -f {q(f'/var/lib/relaunch/{app.name}.applied')}")
    if inv.proxy.tls is not None:
        lines.append("systemctl stop nginx.service 2>/dev/null || true  # it serves the TLS key")
    for db in inv.databases:
        if db.path:  # SQLite: the file is the data
            lines.append("rm -f " + " ".join(q(db.path + s) for s in ("", "-wal", "-shm", "-journal")))
        if db.runs != "native":
            continue  # in a Compose app: its volume went with `down -v`
        if db.engine in ("mariadb", "mysql"):
            sql = (f"DROP DATABASE IF EXISTS `{db.database.replace('`', '``')}`; "
                   + " ".join(f"DROP USER IF EXISTS '{db.user.replace(chr(39), chr(39) * 2)}'@'{h}';"
                              for h in ("localhost", "127.0.0.1")))
            lines.append(f"printf '%s\\n' {q(sql)} | mariadb")
        elif db.engine == "postgresql":
            lines.append(f"runuser -u postgres -- dropdb --if-exists {q(db.database)}")
            lines.append(f"runuser -u postgres -- dropuser --if-exists {q(db.user)}")
    lines += [
        f"rm -rf {render.SECRETS_DIR}/* " + " ".join(q(render.env_file_path(a.name)) for a in inv.apps),
        "rm -rf " + " ".join(q(d) for d in work_dirs) + " /var/cache/relaunch/restic /tmp/relaunch-*",
        "rm -f /var/lib/relaunch/apt-lists.stamp /var/lib/relaunch/nginx.applied /root/.bash_history",
        # the host's identity, kept aside for the drill that goes on with this host
        f"mv -f /etc/ssh/ssh_host_* {ASIDE}/ 2>/dev/null || true",
        f"if [ -e /var/lib/relaunch/host-key-rotated ]; then mv -f /var/lib/relaunch/host-key-rotated {ASIDE}/; fi",
        f"if [ -d /var/lib/cloud ]; then mv -f /var/lib/cloud {ASIDE}/cloud; fi",
        f"install -d -m 0700 {ASIDE}/log; mv -f /var/log/cloud-init*.log {ASIDE}/log/ 2>/dev/null || true",
        "journalctl --rotate >/dev/null 2>&1 || true; journalctl --vacuum-time=1s >/dev/null 2>&1 || true",
        # checked, not assumed: nothing of the host's identity is left for the snapshot
        "left=$(compgen -G '/etc/ssh/ssh_host_*' || true)",
        "[ -e /var/lib/relaunch/host-key-rotated ] && left=\"$left /var/lib/relaunch/host-key-rotated\"",
        "[ -e /var/lib/cloud ] && left=\"$left /var/lib/cloud\"",
        'if [ -n "$left" ]; then echo "still on the host after the clean: $left" >&2; exit 1; fi',
        "sync",
    ]
    return "\n".join(lines) + "\n"


def restore_script(inv: Inventory) -> str:
    """Put back what :func:`clean_script` moved aside and start Docker again (the scratch host goes on with the drill)."""
    return "\n".join([
        f"mv -f {ASIDE}/ssh_host_* /etc/ssh/ 2>/dev/null || true",
        f"if [ -e {ASIDE}/host-key-rotated ]; then mv -f {ASIDE}/host-key-rotated /var/lib/relaunch/; fi",
        f"if [ -d {ASIDE}/cloud ]; then rm -rf /var/lib/cloud; mv -f {ASIDE}/cloud /var/lib/cloud; fi",
        f"mv -f {ASIDE}/log/* /var/log/ 2>/dev/null || true",
        f"rm -rf {ASIDE}",
        *(["systemctl start containerd.service docker.socket docker.service"]
          if any(a.kind == "compose" for a in inv.apps) else []),
    ]) + "\n"


#: Where rendered files, state and logs live: what the secret scan reads (not the OS's own files, not image layers).
SCAN_DIRS = ("/etc", "/root", "/home", "/srv", "/opt", "/tmp", "/var/lib", "/var/log", "/var/cache/relaunch",
             "/var/backups", "/var/spool", "/usr/local")
#: Under SCAN_DIRS, what only holds container images' layers (pulled, not rendered) and the identity set aside.
SCAN_SKIP = ("/var/lib/docker/vfs", "/var/lib/docker/overlay2", "/var/lib/docker/image", "/var/lib/apt/lists",
             "/var/lib/dpkg")


def secret_patterns(values: Iterable[str], minimum: int = 8) -> list[str]:
    """Given secret values, return the fixed strings to scan for: each value's lines of ``minimum`` characters or more.

    A PEM key is scanned line by line (its armour lines are no secret: every key file has them).
    """
    out: list[str] = []
    for value in values:
        for line in str(value).splitlines():
            line = line.strip()
            if len(line) >= minimum and not line.startswith("-----") and line not in out:
                out.append(line)
    return out


def scan_command() -> str:
    """The command that lists files holding any fixed string given on stdin (one per line) under SCAN_DIRS."""
    prune = " -o ".join(f"-path {shlex.quote(p)}" for p in SCAN_SKIP)
    dirs = " ".join(shlex.quote(d) for d in SCAN_DIRS)
    return ("p=$(mktemp /run/relaunch-scan.XXXXXX) && cat >\"$p\" && "
            f"{{ find {dirs} -xdev \\( {prune} \\) -prune -o -type f -print0 2>/dev/null "
            "| xargs -0 -r grep -l -F -f \"$p\" -- 2>/dev/null; true; }; rm -f \"$p\"")


def make(ctx: RunContext) -> dict[str, Any]:
    """The drill's ``golden`` step: clean the scratch host, snapshot it, bootstrap it again, fetch the backup again.

    Return what the journal keeps (``golden``: the snapshot, its tags, the held steps, the
    seconds of the snapshot itself). Raise RelaunchError when a secret is still on the host
    after the clean (naming the files, not the value) or the cloud fails.
    """
    from relaunch.bootstrap import bootstrap
    from relaunch.pipeline.steps import data
    from relaunch.pipeline.steps.host import render_context

    conn = ctx.new_conn()
    recipe = ctx.state.get("recipe") or recipe_hash(ctx.inv)
    started = time.monotonic()
    work_dirs = [f"/var/lib/relaunch/{kind}" for kind in ("drill", "rebuild", "bench")]
    _sh(conn, clean_script(ctx.inv, work_dirs), "cleaning the scratch host for its snapshot", timeout=900)
    facts = {"site": ctx.inv.site, "recipe": recipe, "made_by": f"{ctx.journal.kind} {ctx.journal.id}",
             "made_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _sh(conn, f"install -d /var/lib/relaunch && printf '%s\\n' {shlex.quote(json.dumps(facts))} > {HOST_FILE}",
        "writing the golden facts", timeout=60)
    patterns = secret_patterns(s.reveal() for s in ctx.secrets.values())
    if patterns:
        found = conn.run(scan_command(), in_stream=_Script("\n".join(patterns) + "\n"), warn=True, hide=True,
                         timeout=1800).stdout.split()
        if found:
            _sh(conn, restore_script(ctx.inv), "putting the host's identity back", timeout=120)
            raise RelaunchError(f"{conn.host}: after the clean these files still hold a secret: "
                                f"{', '.join(sorted(found)[:10])}; no golden snapshot was taken")
    name = f"{GOLDEN_TAG}-{ctx.inv.site}-{recipe[:12]}-{datetime.now(timezone.utc):%Y%m%dt%H%M%Sz}"
    ctx.say("golden", f"snapshotting the cleaned scratch host as {name}")
    snap_started = time.monotonic()
    try:
        snapshot = ctx.cloud.snapshot_droplet(int(ctx.state["new_id"]), name)
    finally:
        _sh(conn, restore_script(ctx.inv), "putting the host's identity back", timeout=120)
    snapshot_seconds = round(time.monotonic() - snap_started, 1)
    try:
        ctx.cloud.tag_snapshot(snapshot.id, [GOLDEN_TAG, site_tag(ctx.inv.site), recipe_tag(recipe)])
        ctx.say("golden", f"snapshot {snapshot.id} taken in {snapshot_seconds:.0f} s; bootstrapping the host again")
        ctx.drop_conn("new")
        result = bootstrap(ctx.new_conn(), render_context(ctx),
                           progress=lambda step, done: ctx.say("golden", f"again: {step.name}{' done' if done else ''}"))
        held = [i for i, r in enumerate(result.runbook.steps) if not r.changed]
        ctx.cloud.tag_snapshot(snapshot.id, [held_tag(held)])
    except BaseException:
        # not finished (no held tag): never chosen, but billed; a drill that fails here leaves none behind
        ctx.say("golden", f"deleting the unfinished snapshot {snapshot.id}")
        try:
            ctx.cloud.delete_snapshot(snapshot.id)
        except (RelaunchError, OSError) as exc:
            log.warning("could not delete the unfinished golden snapshot %s: %s (the next drill --golden does)",
                        snapshot.id, exc)
        raise
    ctx.say("golden", "held (no change from the cleaned state): "
            + (", ".join(result.runbook.steps[i].step.name for i in held) or "none") + "; fetching the backup again")
    data.data_backup(ctx)  # the clean removed it: the restore needs it where the data step put it
    deleted = prune(ctx, keep=snapshot.id)
    return {"golden": {"id": snapshot.id, "name": name, "recipe": recipe, "snapshot_seconds": snapshot_seconds,
                       "held": [result.runbook.steps[i].step.name for i in held],
                       "rebootstrapped": result.runbook.changed, "deleted": deleted,
                       "seconds": round(time.monotonic() - started, 1)}}


def prune(ctx: RunContext, keep: int) -> list[int]:
    """Delete every golden snapshot of the site but ``keep``; return the ids deleted."""
    deleted = []
    for snap in ctx.cloud.list_snapshots():
        if site_tag(ctx.inv.site) in snap.tags and snap.id != keep:
            ctx.cloud.delete_snapshot(snap.id)
            deleted.append(snap.id)
            ctx.say("golden", f"deleted the older golden snapshot {snap.name} ({snap.id})")
    return deleted


def _sh(conn: Any, script: str, what: str, timeout: float) -> None:
    """Run ``script`` as the runbooks' steps run (stdin into a 0600 file, ``bash -euo pipefail``, no stdin for it)."""
    try:
        run_steps(conn, [RunbookStep(what.replace(" ", "-"), "relaunch/golden.py", 0, script)], timeout=timeout)
    except RelaunchError as exc:
        raise RelaunchError(f"{conn.host}: {what} failed: {exc}") from None
