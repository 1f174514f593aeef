"""Alerts: what needs a person, POSTed as JSON to the webhook the inventory names (``alerts``).

What alerts, and who notices it:

- **a failed drill** and **a missed objective**: :func:`after_drill`, at the end of every
  ``fab drill`` (so also the scheduled ones: the systemd timer, the CI workflow). One alert per
  drill: ``objective_missed`` when every step passed but RTO, RPO or the largest gap between
  backups missed its objective, else ``drill_failed`` (the step and error).
- **a failed backup run**: the backup runner on the production host posts it the minute it
  fails (:func:`relaunch.backup.runner.post_failure`, the same body through
  :mod:`relaunch.webhook`; the URL and token in 0600 files there) and records in the run's
  status entry whether it went.
- **a backup older than the RPO**, and a failed run the runner could not post (killed, or
  the webhook did not answer): :func:`after_backup_status`, whenever relaunch reads the
  production host's backup status (``fab backup --status``, which the scheduled drill timer
  runs before each drill — see :mod:`relaunch.schedule`). This is the operator's side looking
  in: it also notices a host whose timer died or that is down, which the runner on that host
  could not report itself.

The body (``Content-Type: application/json``) is ntfy's JSON publish format — ``title``,
``message``, ``priority`` (1-5), ``tags`` — so an ntfy server takes it as it is when the
inventory gives ``alerts.topic`` (the body is then exactly ntfy's fields plus ``topic``, POSTed to
the server's root URL). Without a topic it is a generic webhook body: the same four keys plus
``event``, ``site`` and ``details`` (machine-readable; e.g. the drill's status, phase, report).

Sending never changes the outcome it reports: a webhook that does not answer is logged and
returned as a failed :class:`Sent`, the command still exits as it would have. The webhook's
URL may hold a secret (``alerts.webhook_url`` by reference, ``alerts.token``): neither is ever
in a message or log; the URL shows as its scheme and host at most.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relaunch import __version__, webhook
from relaunch.inventory.model import Inventory
from relaunch.inventory.secrets import Secrets

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Alert:
    """One thing that needs a person: ``event`` (drill_failed | objective_missed | backup_failed | backup_stale)."""

    event: str
    site: str
    title: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def body(self, topic: str | None) -> dict[str, Any]:
        """The JSON body: ntfy's publish fields; with ``topic`` only those, else also event, site and details."""
        return webhook.body(self.event, self.site, self.title, self.message, self.details, topic=topic,
                            version=__version__)


@dataclass(frozen=True)
class Sent:
    """What became of one alert: ``ok`` and the HTTP status, or why it did not go (never the URL's secret parts)."""

    event: str
    ok: bool
    to: str
    status: int | None = None
    error: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"alert {self.event} sent to {self.to} (HTTP {self.status})"
        return f"alert {self.event} NOT sent to {self.to}: {self.error}"


def configured(inv: Inventory) -> bool:
    return inv.alerts is not None


def _target(inv: Inventory, secrets: Secrets) -> tuple[str, str]:
    """(the URL, how to name it in messages)."""
    assert inv.alerts is not None
    if inv.alerts.webhook:
        return inv.alerts.webhook, webhook.shown(inv.alerts.webhook)
    ref = inv.alerts.webhook_url
    return secrets[ref].reveal(), f"alerts.webhook_url ({ref})"  # type: ignore[index]


def send(inv: Inventory, secrets: Secrets, alert: Alert, timeout: float = webhook.TIMEOUT) -> Sent:
    """POST ``alert`` to the site's webhook; return what happened (never raise for a webhook that fails)."""
    if inv.alerts is None:
        return Sent(alert.event, False, "-", error="no alerts.webhook in the inventory")
    url, shown = _target(inv, secrets)
    token = secrets[inv.alerts.token].reveal() if inv.alerts.token else None
    ok, status, error = webhook.post(url, alert.body(inv.alerts.topic), token=token, version=__version__,
                                     timeout=timeout)
    sent = Sent(alert.event, ok, shown, status, error)
    (log.info if sent.ok else log.warning)("%s", sent.describe())
    return sent


def _secrets_or_none(inv: Inventory, secrets: Secrets | None) -> Secrets | None:
    if secrets is not None:
        return secrets
    from relaunch.inventory.secrets import resolve_all

    return resolve_all(inv)


def send_all(inv: Inventory, secrets: Secrets | None, found: list[Alert]) -> list[Sent]:
    """Send each alert (none when the inventory names no webhook); the secrets are resolved when not given."""
    if not found or inv.alerts is None:
        return []
    resolved = _secrets_or_none(inv, secrets)
    assert resolved is not None
    return [send(inv, resolved, a) for a in found]


# --- what alerts --------------------------------------------------------------------------


def drill_alerts(record: dict[str, Any], report: Path | str | None = None) -> list[Alert]:
    """The alert a drill's report calls for: none when it passed, else objective_missed or drill_failed."""
    if record.get("status") == "passed":
        return []
    site = record.get("site") or "?"
    failed = [p for p in record.get("phases") or [] if p.get("status") == "failed"]
    details = {"status": record.get("status"), "error": record.get("error"), "missed": record.get("missed") or [],
               "failed_phase": failed[0]["name"] if failed else None, "backup_id": record.get("backup_id"),
               "rto_seconds": record.get("rto_seconds"), "rpo_seconds": record.get("rpo_seconds"),
               "scratch_destroyed": record.get("scratch_destroyed"), "drill_id": record.get("id"),
               "report": str(report) if report else None}
    where = f"\nreport: {report}" if report else ""
    if not failed and record.get("missed") and str(record.get("error") or "").startswith("objective missed"):
        return [Alert("objective_missed", site, f"relaunch {site}: drill missed an objective",
                      "Every step passed, but: " + "; ".join(record["missed"]) + where, details)]
    phase = f" at {failed[0]['name']}" if failed else ""
    return [Alert("drill_failed", site, f"relaunch {site}: drill failed{phase}",
                  f"{record.get('error') or 'the drill failed'}{where}", details)]


def after_drill(inv: Inventory, secrets: Secrets | None, record: dict[str, Any],
                report: Path | str | None = None) -> list[Sent]:
    """Send the alert a finished drill calls for; return what was sent (empty: nothing to say, or no webhook)."""
    return send_all(inv, secrets, drill_alerts(record, report))


def backup_alerts(site: str, host: str, status: Any) -> list[Alert]:
    """The alerts a production host's backup status (:class:`relaunch.backup.status.Status`) calls for.

    backup_failed when the last run failed (or was killed) and the runner did not post that itself;
    backup_stale when the newest good backup is older than the RPO objective (or there is none).
    """
    out = []
    last = status.last
    if status.last_failed and last is not None and not last.alerted:
        what = "never recorded its end (killed)" if last.state == "running" else f"failed at step {last.step}: {last.error}"
        out.append(Alert("backup_failed", site, f"relaunch {site}: backup failed on {host}",
                         f"The last backup run ({last.started_at:%Y-%m-%d %H:%M} UTC) {what}",
                         {"host": host, "step": last.step, "error": last.error, "started_at": last.started_at.isoformat()}))
    if status.stale:
        good = status.newest_good
        age = status.age
        message = (f"The newest good backup ({good.id}) is {age.total_seconds() / 60:.0f} min old, older than the RPO "
                   f"objective of {status.rpo_minutes} min" if good is not None and age is not None
                   else "There is no good backup on the host")
        out.append(Alert("backup_stale", site, f"relaunch {site}: backups older than the RPO on {host}", message,
                         {"host": host, "newest_good": good.id if good else None, "rpo_minutes": status.rpo_minutes,
                          "age_seconds": None if age is None else round(age.total_seconds()),
                          "timer_active": status.timer_active}))
    return out


def after_backup_status(inv: Inventory, status: Any, secrets: Secrets | None = None) -> list[Sent]:
    """Send the alerts a backup status calls for (see :func:`backup_alerts`); return what was sent."""
    return send_all(inv, secrets, backup_alerts(inv.site, inv.production.droplet_name, status))
