"""Host steps: provision a Droplet (host key pinned through user-data), boot it until SSH and cloud-init are done, bootstrap it.

Shared by ``fab rebuild``, ``fab drill`` and ``fab sandbox-up --site``. The new host's name,
id and addresses are journaled the moment they exist, so a resumed run finds the same
Droplet instead of making a second one.
"""

from __future__ import annotations

from typing import Any

from relaunch.bootstrap import bootstrap, wait_for_cloud_init
from relaunch.pipeline.context import RunContext
from relaunch.provision import create_host, find_droplet, known_host, wants_ipv6
from relaunch.remote import HostKey, ensure_client_key
from relaunch.render import RenderContext, render_user_data


def render_context(ctx: RunContext, host_key: HostKey | None = None) -> RenderContext:
    """What the new host's files and runbooks are rendered from (images by digest: ``state['images']``)."""
    return RenderContext(
        inventory=ctx.inv, secrets=ctx.secrets, images=ctx.state.get("images") or {},
        sandbox=ctx.inv.provider.kind == "sandbox", host_key=host_key,
        authorized_keys=[ensure_client_key(ctx.key_path)], hostname=ctx.state["new_name"],
    )


def provision(ctx: RunContext) -> dict[str, Any]:
    """Create the run's Droplet (or find the one an interrupted attempt made); journal its id and addresses."""
    name = ctx.state["new_name"]
    droplet = find_droplet(ctx.cloud, ctx.inv, name)
    created = droplet is None
    if droplet is not None:
        record = known_host(ctx.inv, droplet)
        ctx.say("provision", f"found Droplet {name} ({droplet.id})")
    else:
        region, size = ctx.options.get("region") or ctx.inv.provider.region, ctx.options.get("size") or ctx.inv.provider.size
        ctx.say("provision", f"creating Droplet {name} ({size} in {region}, {ctx.inv.provider.image})")
        inv = ctx.inv
        if (region, size) != (inv.provider.region, inv.provider.size):
            inv = inv.model_copy(update={"provider": inv.provider.model_copy(update={"region": region, "size": size})})
        public = ensure_client_key(ctx.key_path)
        record = create_host(
            ctx.cloud, inv, name, ctx.options.get("role", "rebuild"), public,
            lambda hk: render_user_data(render_context(ctx, hk)), ssh_timeout=None,
        )
    return {"new_id": record.droplet_id, "new_ipv4": record.ipv4, "new_ipv6": record.ipv6 if wants_ipv6(ctx.inv) else None,
            "created": created}


def boot(ctx: RunContext) -> dict[str, Any]:
    """Wait until the new host answers SSH with its pinned key and cloud-init has finished."""
    conn = ctx.new_conn(timeout=300)
    wait_for_cloud_init(conn)
    return {}


def bootstrap_host(ctx: RunContext) -> dict[str, Any]:
    """Render the host's files from the inventory, upload them, run the runbooks (idempotent)."""
    conn = ctx.new_conn()
    result = bootstrap(conn, render_context(ctx),
                       progress=lambda step, done: ctx.say("bootstrap", f"{step.name}{' done' if done else ''}"))
    ctx.results["bootstrap"] = result
    return {"bootstrap_changed": result.runbook.changed, "files_written": len(result.files_written)}
