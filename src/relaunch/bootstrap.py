"""Bootstrap a host: put the rendered files in place, then run the runbook steps in order."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from fabric import Connection

from relaunch.errors import RelaunchError
from relaunch.render import RenderContext, render_host
from relaunch.runbooks import RunbookResult, Step, StepResult, load_steps, run_steps, steps_to_run
from relaunch.upload import upload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BootstrapResult:
    files_written: list[str]
    runbook: RunbookResult
    #: Steps tagged ``when=fresh`` left out because the site was not fresh (a rebuild or drill restores the data).
    skipped: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether anything on the host changed (a second run on the same inputs says False)."""
        return bool(self.files_written) or self.runbook.changed


def wait_for_cloud_init(conn: Connection, timeout: float = 900) -> None:
    """Wait until cloud-init has finished on the host (it runs apt itself on first boot).

    Raise RelaunchError if it failed: a host whose user-data did not apply is not the
    host the runbooks expect.
    """
    run = conn.run(  # one cloud-init process: it waits, then says how it ended (exit 1 when it failed)
        "command -v cloud-init >/dev/null || exit 0; cloud-init status --wait --long",
        warn=True, hide=True, in_stream=False, timeout=timeout,
    )
    if not run.ok:
        raise RelaunchError(f"{conn.host}: cloud-init did not finish cleanly:\n{(run.stdout + run.stderr)[-1500:]}")


def bootstrap(
    conn: Connection,
    ctx: RenderContext,
    progress: Callable[[Step, StepResult | None], None] | None = None,
    cloud_init_done: bool = False,
) -> BootstrapResult:
    """Render the host's files, upload what differs, run every runbook step; raise on the first failure.

    Files go first so the steps find their configuration in place (package installs keep
    existing configuration files). Steps tagged ``when=fresh`` (an app's one-time installer)
    run only with ``ctx.fresh_site``; a rebuild or drill restores the data instead.
    ``cloud_init_done``: the caller saw cloud-init finish on this boot of the host (else it is waited for).
    """
    if not cloud_init_done:
        wait_for_cloud_init(conn)
    steps, skipped = steps_to_run(load_steps(ctx), ctx.fresh_site)  # rendered before anything changes on the host
    written = upload(conn, render_host(ctx))
    log.info("%s: %d file(s) written", conn.host, len(written))
    for step in skipped:
        log.info("step %s (%s) initialises data: not run (the data is restored, not made)", step.name, step.where)
    result = run_steps(conn, steps, progress=progress)
    return BootstrapResult(files_written=written, runbook=result, skipped=[s.name for s in skipped])
