"""Host steps: provision a Droplet (host key pinned through user-data), boot it until SSH and cloud-init are done, bootstrap it.

Shared by ``fab rebuild``, ``fab drill`` and ``fab sandbox-up --site``. The new host's name,
id and addresses are journaled the moment they exist, so a resumed run finds the same
Droplet instead of making a second one.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from relaunch import golden
from relaunch.bootstrap import bootstrap, wait_for_cloud_init
from relaunch.errors import RelaunchError
from relaunch.pipeline.context import RunContext
from relaunch.provision import create_host, find_droplet, known_host, wants_ipv6
from relaunch.remote import HostKey, HostKeyMismatch, ensure_client_key
from relaunch.render import RenderContext, render_user_data
from relaunch.state import save_host

#: The one kind of run that sets a site up fresh (its data made, not restored): ``fab sandbox-up --site``.
FRESH_KIND = "sandbox-up"


def render_context(ctx: RunContext, host_key: HostKey | None = None) -> RenderContext:
    """What the new host's files and runbooks are rendered from (images by digest: ``state['images']``)."""
    return RenderContext(
        inventory=ctx.inv, secrets=ctx.secrets, images=ctx.state.get("images") or {},
        sandbox=ctx.inv.provider.kind == "sandbox", host_key=host_key,
        authorized_keys=[ensure_client_key(ctx.key_path)], hostname=ctx.state["new_name"],
        # a new site's data is made by its when=fresh steps; a rebuild's or drill's is restored
        fresh_site=ctx.journal.kind == FRESH_KIND,
    )


#: In-process result of ``boot``: it saw cloud-init finish, so the bootstrap right after need not wait again.
CLOUD_INIT_DONE = "cloud_init_done"


def provision(ctx: RunContext) -> dict[str, Any]:
    """Create the run's Droplet (or find the one an interrupted attempt made); journal its id and addresses."""
    name = ctx.state["new_name"]
    droplet = find_droplet(ctx.cloud, ctx.inv, name)
    created = droplet is None
    cloud_seconds = None  # a Droplet an interrupted attempt made: its making was not timed
    if droplet is not None:
        record = known_host(ctx.inv, droplet)
        ctx.say("provision", f"found Droplet {name} ({droplet.id})")
    else:
        region, size = ctx.options.get("region") or ctx.inv.provider.region, ctx.options.get("size") or ctx.inv.provider.size
        golden_image = ctx.state.get("golden_image")  # chosen in preflight (relaunch.golden)
        image = str(golden_image["id"]) if golden_image else ctx.inv.provider.image
        ctx.say("provision", f"creating Droplet {name} ({size} in {region}, "
                f"{golden.describe(ctx.state) if golden_image else image})")
        inv = ctx.inv
        if (region, size, image) != (inv.provider.region, inv.provider.size, inv.provider.image):
            inv = inv.model_copy(update={"provider": inv.provider.model_copy(
                update={"region": region, "size": size, "image": image})})
        public = ensure_client_key(ctx.key_path)
        asked: list[float] = []
        try:
            record = create_host(
                ctx.cloud, inv, name, ctx.options.get("role", "rebuild"), public,
                lambda hk: render_user_data(render_context(ctx, hk)), ssh_timeout=None,
                requested=lambda _id: asked.append(time.monotonic()),
            )
        except RelaunchError as exc:
            raise _half_created(ctx, name, exc) from None
        # the Droplet's boot as far as the cloud does it, not relaunch's work: the report and the benchmark say so
        cloud_seconds = round(time.monotonic() - asked[0], 1) if asked else None
        ctx.say("provision", f"Droplet {name} ({record.droplet_id}) is active at {record.ipv4}"
                + (f": the cloud took {cloud_seconds} s to make it" if cloud_seconds is not None else ""))
    return {"new_id": record.droplet_id, "new_ipv4": record.ipv4, "new_ipv6": record.ipv6 if wants_ipv6(ctx.inv) else None,
            "created": created, "provision_cloud_seconds": cloud_seconds}


#: The tag a rebuild puts on a Droplet whose create failed half-way (kept for inspection, still billed).
FAILED_TAG = "relaunch-failed"


def _half_created(ctx: RunContext, name: str, exc: RelaunchError) -> RelaunchError:
    """The error for a create that failed (the API's errors and waits are retried in the adapter within its limits).

    A Droplet may exist anyway (its create action errored, or it never became active). A
    drill destroys it with the rest of its scratch (it looks it up by name). Any other run
    tags it ``relaunch-failed``, journals it, names it in the error, and moves the run on to
    a fresh name, so a resume creates a new Droplet instead of adopting the broken one.
    """
    reason = ctx.mask(str(exc))
    try:
        found = find_droplet(ctx.cloud, ctx.inv, name)
    except RelaunchError as lookup:
        return RelaunchError(f"creating Droplet {name} failed: {reason}. Whether a half-created Droplet {name} exists "
                             f"could not be checked ({ctx.mask(str(lookup))}): look for it in the DigitalOcean console")
    if found is None:
        return RelaunchError(f"creating Droplet {name} failed: {reason}. No Droplet {name} was left behind.")
    if ctx.journal.kind == "drill":
        return RelaunchError(f"creating the scratch Droplet {name} failed: {reason}. The half-created Droplet "
                             f"({found.id}) is destroyed with the drill's scratch.")
    tagged = True
    try:
        ctx.cloud.tag_droplet(found.id, FAILED_TAG)
    except RelaunchError:
        tagged = False
    failed = [*(ctx.state.get("failed_droplets") or []), {"name": name, "id": found.id, "status": found.status,
                                                          "tagged": FAILED_TAG if tagged else None}]
    attempt = len(failed) + 1
    base = ctx.state.get("base_name") or name
    ctx.journal.record(failed_droplets=failed, base_name=base, new_name=f"{base}-{attempt}")
    return RelaunchError(
        f"creating Droplet {name} failed: {reason}. The half-created Droplet {name} (id {found.id}, status "
        f"{found.status}) is kept for inspection{f', tagged {FAILED_TAG}' if tagged else ''}; it is billed: destroy it "
        f"when done (`fab rebuild --abort --destroy --site {ctx.inv.site}` also ends the run). Nothing was switched. `fab rebuild --resume --site {ctx.inv.site}` "
        "creates a new Droplet.")


def boot(ctx: RunContext) -> dict[str, Any]:
    """Wait until the new host answers SSH with its pinned key and cloud-init has finished; rotate its host key.

    The key that travelled in user-data stays readable from the metadata service for the
    Droplet's whole life, so after the first verified connection the host gets a new one,
    made here and sent over that connection, and the new one is pinned. The new public key
    is journaled before the host uses it, so a run stopped in between still knows it.
    """
    try:
        conn = ctx.new_conn(timeout=300)
    except HostKeyMismatch:
        pending = ctx.state.get("rotating_host_key")
        if not pending:
            raise
        _pin(ctx, pending)  # an earlier attempt rotated the key and stopped before pinning it
        conn = ctx.new_conn(timeout=60)
    wait_for_cloud_init(conn)
    ctx.results[CLOUD_INIT_DONE] = True  # for this process's bootstrap: the host has not rebooted since
    stamp = "/var/lib/relaunch/host-key-rotated"
    if ctx.state.get("host_key_rotated") or conn.run(f"test -e {stamp}", warn=True, hide=True, in_stream=False,
                                                     timeout=30).ok:
        return {"host_key_rotated": True}
    key = HostKey.generate()
    ctx.journal.record(rotating_host_key=key.public_line)
    sftp = conn.sftp()
    for name, content, mode in (("ssh_host_ed25519_key.relaunch-new", key.private_openssh, 0o600),
                                ("ssh_host_ed25519_key.pub.relaunch-new", key.public_line + "\n", 0o644)):
        with sftp.open(f"/etc/ssh/{name}", "w") as fh:
            fh.chmod(mode)
            fh.write(content.encode())
    run = conn.run(
        "set -e; cd /etc/ssh; mv -f ssh_host_ed25519_key.relaunch-new ssh_host_ed25519_key; "
        "mv -f ssh_host_ed25519_key.pub.relaunch-new ssh_host_ed25519_key.pub; "
        "systemctl reload ssh 2>/dev/null || systemctl reload sshd; "
        "install -d /var/lib/relaunch; touch /var/lib/relaunch/host-key-rotated",
        warn=True, hide=True, in_stream=False, timeout=60)
    if not run.ok:
        raise RelaunchError(f"{conn.host}: rotating the host key failed: {(run.stdout + run.stderr).strip()[-800:]}")
    _pin(ctx, key.public_line)
    ctx.drop_conn("new")
    ctx.new_conn(timeout=60)  # the new key answers
    return {"host_key_rotated": True}


def _pin(ctx: RunContext, public_line: str) -> None:
    record = ctx.new_record()
    save_host(ctx.inv.site, dataclasses.replace(record, host_key=public_line))
    ctx.drop_conn("new")


def bootstrap_host(ctx: RunContext) -> dict[str, Any]:
    """Render the host's files from the inventory, upload them, run the runbooks (idempotent)."""
    conn = ctx.new_conn()
    result = bootstrap(conn, render_context(ctx),
                       progress=lambda step, done: ctx.say("bootstrap", f"{step.name}{' done' if done else ''}"),
                       cloud_init_done=ctx.results.pop(CLOUD_INIT_DONE, False))
    ctx.results["bootstrap"] = result
    return {"bootstrap_changed": result.runbook.changed, "files_written": len(result.files_written),
            "skipped_fresh_steps": result.skipped, **golden.check_bootstrap(ctx, result)}
