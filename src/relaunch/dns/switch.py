"""Cut a site's traffic over to another host: DNS records (or a Reserved IP), checked, journaled, undoable.

The steps, in order, each one a function a caller (``fab dns-switch``, ``fab rebuild``) can use:

- ``plan_switch`` resolves a TARGET (``new``, ``old``, a Droplet name, addresses) and returns the
  exact record changes (id, name, type, data and TTL before → after), changing nothing;
- ``switch`` takes the site's lock, runs every health check against the target (refusing on a
  failure unless forced), finds the zone's authoritative servers, journals the previous state
  (read right before the change) of every record in
  ``site_dir(site)/dns-journal.json`` *before* the first change, applies the changes with a
  rollback (any exception or Ctrl-C puts back the records already changed, then re-raises), and
  verifies the zone's authoritative servers answer the new addresses within a bounded wait;
- ``prepare`` lowers the records' TTL to ``dns.switch_ttl`` (remembering the old TTL in the
  journal), ``restore_ttl`` puts it back.

Nothing here prints: results are returned, progress goes to an optional callback and to logging.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

from relaunch.cloud import Cloud, DnsRecord, Droplet, open_site_cloud
from relaunch.cloud.local import open_local_cloud
from relaunch.errors import RelaunchError
from relaunch.health import HealthReport, check_site
from relaunch.inventory.model import Inventory
from relaunch.provision import site_droplets
from relaunch.state import DRILL_ROLE, DRILL_TAG, SERVING_ROLES, Locked, load_hosts, pid_lock, site_dir, write_json_atomic

log = logging.getLogger(__name__)

JOURNAL = "dns-journal.json"
LOCK = "dns-switch.lock"
#: How many past switches the journal keeps.
KEEP_SWITCHES = 20
#: Above this TTL (seconds) a switch warns that clients may keep the old address for long.
HIGH_TTL = 300

Via = Literal["dns", "reserved-ip"]
Progress = Callable[[str], None]


class RollbackFailed(RelaunchError):
    """A change failed and putting back the records already changed failed too (the message names them)."""


class Verifier(Protocol):
    """``relaunch.dns.authoritative.wait_until_answers``'s shape: returns an object with seconds, answers, ok."""

    def __call__(self, names: Sequence[str], rdtype: str, expected: str, servers: Any, timeout: float) -> Any: ...


# --- results -----------------------------------------------------------------


@dataclass(frozen=True)
class RecordChange:
    """One record's change: before → after (data and TTL). ``id`` is the API's record id."""

    id: int
    name: str
    type: str
    before_data: str
    before_ttl: int | None
    after_data: str
    after_ttl: int | None

    @property
    def changes_anything(self) -> bool:
        return (self.before_data, self.before_ttl) != (self.after_data, self.after_ttl)

    def describe(self) -> str:
        return (f"{self.type} {self.name} (record {self.id}): {self.before_data} ttl {self.before_ttl} "
                f"-> {self.after_data} ttl {self.after_ttl}")


@dataclass(frozen=True)
class ReservedIpChange:
    ip: str
    region: str | None
    before_droplet: int | None
    after_droplet: int


@dataclass
class SwitchPlan:
    """What a switch would do. ``addresses`` maps record type (A, AAAA) to the target address."""

    site: str
    zone: str
    target: str  # as asked: new, old, a name, addresses
    via: Via
    addresses: dict[str, str]
    droplet: Droplet | None  # the target Droplet when known
    changes: list[RecordChange] = field(default_factory=list)
    reserved_ip: ReservedIpChange | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def health_addresses(self) -> list[str]:
        """Where the health checks go: the IPv4, and the IPv6 (bracketed) when AAAA records will point there."""
        out = [self.addresses["A"]] if "A" in self.addresses else []
        if "AAAA" in self.addresses and (not out or any(c.type == "AAAA" for c in self.changes)):
            out.append(f"[{self.addresses['AAAA']}]")
        if not out:
            raise RelaunchError("the target has no address to check")
        return out


@dataclass(frozen=True)
class Verification:
    """How the authoritative servers answered after the change (``skipped`` says why there was no check)."""

    ok: bool
    seconds: float
    answers: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


@dataclass
class SwitchResult:
    plan: SwitchPlan
    dry_run: bool
    forced: bool = False
    health: HealthReport | None = None
    applied: list[RecordChange] = field(default_factory=list)
    reserved_ip_after: int | None = None
    waited_ttl: float = 0.0
    verification: Verification | None = None
    ttl_restored: TtlResult | None = None  # after the settle time, when one was asked for
    phases: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when everything asked for was done (or, in a dry run, would be) and verified."""
        return self.verification is None or self.verification.ok

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "site": plan.site, "zone": plan.zone, "target": plan.target, "via": plan.via,
            "addresses": plan.addresses, "droplet": plan.droplet.name if plan.droplet else None,
            "dry_run": self.dry_run, "forced": self.forced, "ok": self.ok,
            "health": None if self.health is None else {
                "address": self.health.address, "ok": self.health.ok,
                "failures": [r.describe() for r in self.health.failures()],
            },
            "changes": [asdict(c) for c in plan.changes],
            "applied": [c.id for c in self.applied],
            "reserved_ip": asdict(plan.reserved_ip) if plan.reserved_ip else None,
            "waited_ttl_seconds": round(self.waited_ttl, 3),
            "verification": None if self.verification is None else {
                "ok": self.verification.ok, "seconds": round(self.verification.seconds, 3),
                "skipped": self.verification.skipped,
                "answers": {k: _jsonable(v) for k, v in self.verification.answers.items()},
            },
            "ttl_restored": None if self.ttl_restored is None else [asdict(c) for c in self.ttl_restored.changes],
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "warnings": plan.warnings + self.warnings,
        }


@dataclass
class TtlResult:
    """What ``prepare`` or ``restore_ttl`` changed; ``wait_seconds``: how long caches may hold the old TTL."""

    changes: list[RecordChange]
    wait_seconds: int = 0
    dry_run: bool = False


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# --- journal and lock -----------------------------------------------------------


def journal_path(site: str) -> Path:
    return site_dir(site) / JOURNAL


def load_journal(site: str) -> dict[str, Any]:
    """Return the site's DNS journal ({"switches": [...], "ttl": {...}}); empty if there is none.

    Raise RelaunchError if the file exists but is not a journal (never guess at what to restore).
    """
    path = journal_path(site)
    if not path.exists():
        return {"switches": [], "ttl": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RelaunchError(f"{path}: unreadable DNS journal ({exc}); fix or move it aside") from None
    if not isinstance(data, dict) or not isinstance(data.get("switches", []), list):
        raise RelaunchError(f"{path}: not a DNS journal (expected an object with a 'switches' list)")
    data.setdefault("switches", [])
    data.setdefault("ttl", {})
    return data


def save_journal(site: str, journal: dict[str, Any]) -> None:
    """Write the journal atomically (temporary file, fsync, rename): a crash leaves the old or the new one."""
    path = journal_path(site)
    journal["switches"] = journal["switches"][-KEEP_SWITCHES:]
    write_json_atomic(path, journal)


@contextlib.contextmanager
def site_lock(site: str) -> Iterator[None]:
    """Hold the site's switch lock (fcntl, released when the process dies); refuse if another holds it."""
    path = site_dir(site) / LOCK
    try:
        with pid_lock(path):
            yield
    except Locked as exc:
        raise RelaunchError(
            f"another DNS switch of site {site!r} is running (pid {exc.holder}, lock {path}); "
            "two at once could leave the records half switched"
        ) from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def last_switch(journal: dict[str, Any]) -> dict[str, Any] | None:
    """The newest switch whose changes may be in place (done, or interrupted, or not fully rolled back)."""
    for entry in reversed(journal["switches"]):
        if entry.get("status") != "rolled-back":
            return entry
    return None


# --- planning ------------------------------------------------------------------


def _fqdn(name: str, zone: str) -> str:
    return zone if name == "@" else f"{name}.{zone}"


def _site_records(cloud: Cloud, inv: Inventory) -> list[DnsRecord]:
    """The zone's records named by the inventory, one per spec; raise if one is missing or ambiguous."""
    zone = inv.dns.zone
    present = cloud.list_records(zone)
    out = []
    for spec in inv.dns.records:
        found = [r for r in present if r.type == spec.type and r.name == spec.name]
        if not found:
            raise RelaunchError(f"zone {zone} has no {spec.type} record {spec.name!r} (dns.records names it); "
                                "create it first")
        if len(found) > 1:
            ids = ", ".join(str(r.id) for r in found)
            raise RelaunchError(f"zone {zone} has {len(found)} {spec.type} records {spec.name!r} ({ids}); "
                                "relaunch switches one record per name and type")
        out.append(found[0])
    return out


def _parse_addresses(target: str) -> dict[str, str] | None:
    """``203.0.113.5``, ``2001:db8::5`` or both comma-separated → {"A": ..., "AAAA": ...}; None if not addresses."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in target.split(",")):
        try:
            ip = ipaddress.ip_address(part)
        except ValueError:
            return None
        kind = "A" if ip.version == 4 else "AAAA"
        if kind in out:
            raise RelaunchError(f"target {target!r} names two IPv{ip.version} addresses")
        out[kind] = str(ip)
    return out


def _newest_built(cloud: Cloud, inv: Inventory) -> Droplet:
    """The newest Droplet relaunch built to serve this site (role rebuild or spare), never a drill's.

    Production, the backup host and a drill's scratch host (role ``drill`` or tag ``relaunch-drill``:
    it answers health checks with a backup's stale data) are never candidates.
    """
    prod = inv.production.droplet_name
    hosts = [h for h in load_hosts(inv.site).values() if h.role in SERVING_ROLES and h.name != prod]
    for newest in sorted(hosts, key=lambda h: h.created_at, reverse=True):
        droplet = cloud.get_droplet(newest.droplet_id)
        if DRILL_TAG in droplet.tags:
            log.info("not a candidate for new: %s carries the drill tag %s", droplet.name, DRILL_TAG)
            continue
        if droplet.ipv4 != newest.ipv4:
            raise RelaunchError(f"Droplet {newest.name} ({newest.droplet_id}) was built at {newest.ipv4} and is now "
                                f"at {droplet.ipv4}; refusing to guess")
        return droplet
    roles = " or ".join(SERVING_ROLES)
    raise RelaunchError(f"relaunch has built no Droplet to serve site {inv.site!r} (role {roles} in "
                        f"{site_dir(inv.site) / 'hosts.json'}; production, backup and drill hosts never count); "
                        "name the target instead")


def _refuse_non_serving(inv: Inventory, droplet: Droplet) -> None:
    """Refuse a target that is a drill's scratch host or the site's backup host, however it was named."""
    record = load_hosts(inv.site).get(droplet.name)
    if record is not None and record.droplet_id != droplet.id:
        record = None  # a namesake: the record is about a Droplet since deleted
    if DRILL_TAG in droplet.tags or (record is not None and record.role == DRILL_ROLE):
        raise RelaunchError(f"Droplet {droplet.name} is a drill's scratch host (it serves a backup's data, not "
                            "the site's); traffic never goes there")
    if record is not None and record.role not in (*SERVING_ROLES, "production"):
        raise RelaunchError(f"Droplet {droplet.name} is the site's {record.role} host, not one built to serve it; "
                            "traffic never goes there")


def _resolve(cloud: Cloud, inv: Inventory, target: str) -> tuple[dict[str, str], Droplet | None]:
    """TARGET (not ``old``) → (record type → address, the Droplet when known)."""
    addresses = _parse_addresses(target)
    if addresses is not None:
        droplet = None
        for kind, attr in (("A", "ipv4"), ("AAAA", "ipv6")):
            if droplet is None and kind in addresses:
                droplet = next((d for d in site_droplets(cloud, inv)
                                if getattr(d, attr) and ipaddress.ip_address(getattr(d, attr))
                                == ipaddress.ip_address(addresses[kind])), None)
        if droplet is not None:
            _refuse_non_serving(inv, droplet)
        return addresses, droplet
    if target == "new":
        droplet = _newest_built(cloud, inv)
    else:
        named = [d for d in site_droplets(cloud, inv) if d.name == target]
        if len(named) > 1:
            raise RelaunchError(f"{len(named)} Droplets are called {target!r}; name the target by its address")
        if not named:
            raise RelaunchError(f"no Droplet of site {inv.site!r} is called {target!r} "
                                "(TARGET is new, old, a Droplet name or an IPv4/IPv6 address)")
        droplet = named[0]
    _refuse_non_serving(inv, droplet)
    if not droplet.ipv4:
        raise RelaunchError(f"Droplet {droplet.name} ({droplet.id}) has no public IPv4")
    return {"A": droplet.ipv4, **({"AAAA": droplet.ipv6} if droplet.ipv6 else {})}, droplet


def plan_switch(cloud: Cloud, inv: Inventory, target: str, via: Via = "dns") -> SwitchPlan:
    """Given a TARGET, return the exact changes a switch would make; change nothing.

    TARGET is ``new`` (the newest Droplet relaunch built to serve the site: role rebuild or spare,
    never production, the backup host or a drill's scratch host),
    ``old`` (the state before the last switch, from the journal), a Droplet name, or addresses
    (IPv4, IPv6, or both comma-separated; A records take the IPv4, AAAA the IPv6). Records keep
    their TTL (``old``: the journaled data and TTL come back exactly). Raise RelaunchError if a
    record is missing, the target lacks an address a record needs, or (reserved-ip) the Reserved
    IP cannot move to the target, or the target is a drill's scratch host or the backup host
    (however named: they never take traffic).
    """
    zone = inv.dns.zone
    if via not in ("dns", "reserved-ip"):
        raise RelaunchError(f"via must be 'dns' or 'reserved-ip', not {via!r}")
    if via == "reserved-ip":
        return _plan_reserved_ip(cloud, inv, target)
    records = _site_records(cloud, inv)
    plan: SwitchPlan
    if target == "old":
        entry = last_switch(load_journal(inv.site))
        if entry is None:
            raise RelaunchError(f"no earlier switch of site {inv.site!r} in {journal_path(inv.site)}: "
                                "nothing to go back to")
        if entry.get("via") != "dns":
            raise RelaunchError("the last switch moved the Reserved IP; go back with via='reserved-ip' and target 'old'")
        current = {r.id: r for r in cloud.list_records(zone)}
        changes = []
        addresses: dict[str, str] = {}
        for rec in entry["records"]:
            now = current.get(int(rec["id"]))
            if now is None:
                raise RelaunchError(f"record {rec['id']} ({rec['type']} {rec['name']}) of the last switch is gone "
                                    f"from {zone}; cannot restore it")
            changes.append(RecordChange(now.id, now.name, now.type, now.data, now.ttl, rec["data"], rec["ttl"]))
            addresses.setdefault(rec["type"], rec["data"])
        plan = SwitchPlan(inv.site, zone, "old", "dns", addresses, None, changes)
    else:
        addresses, droplet = _resolve(cloud, inv, target)
        changes = []
        for r in records:
            if r.type not in addresses:
                have = " and ".join(f"IPv{4 if k == 'A' else 6}" for k in addresses)
                raise RelaunchError(f"{r.type} record {r.name!r} needs an IPv{4 if r.type == 'A' else 6} address; "
                                    f"target {target!r} gives only {have}")
            changes.append(RecordChange(r.id, r.name, r.type, r.data, r.ttl, addresses[r.type], r.ttl))
        plan = SwitchPlan(inv.site, zone, target, "dns", addresses, droplet, changes)
    for c in plan.changes:
        if (c.after_ttl or 0) > HIGH_TTL:
            plan.warnings.append(
                f"{c.type} {c.name} has TTL {c.after_ttl} s: resolvers may keep the old address that long "
                f"(prepare first to lower it to {inv.dns.switch_ttl} s, then wait out the old TTL)"
            )
    return plan


def _plan_reserved_ip(cloud: Cloud, inv: Inventory, target: str) -> SwitchPlan:
    if inv.dns.reserved_ip is None:
        raise RelaunchError(f"site {inv.site!r} names no Reserved IP (dns.reserved_ip); switch with DNS instead")
    ip = str(inv.dns.reserved_ip)
    rip = cloud.get_reserved_ip(ip)
    if target == "old":
        entry = last_switch(load_journal(inv.site))
        if entry is None or entry.get("via") != "reserved-ip" or entry.get("reserved_ip", {}).get("ip") != ip:
            raise RelaunchError(f"no earlier Reserved IP switch of {ip} in {journal_path(inv.site)}: nothing to go back to")
        before = entry["reserved_ip"]["droplet_id"]
        if before is None:
            raise RelaunchError(f"before the last switch Reserved IP {ip} was assigned to no Droplet; "
                                "relaunch will not unassign it (name a target instead)")
        droplet = cloud.get_droplet(int(before))
    else:
        addresses, found = _resolve(cloud, inv, target)
        if found is None:
            raise RelaunchError(f"target {target!r} is not a Droplet of site {inv.site!r}; a Reserved IP can only "
                                "be assigned to a Droplet")
        droplet = found
    if droplet.region != rip.region:
        raise RelaunchError(
            f"Reserved IP {ip} is in region {rip.region} and Droplet {droplet.name} in {droplet.region}: "
            "a Reserved IP cannot move across regions; switch with DNS instead (via dns)"
        )
    assert droplet.ipv4 is not None
    change = ReservedIpChange(ip, rip.region, rip.droplet_id, droplet.id)
    return SwitchPlan(inv.site, inv.dns.zone, target, "reserved-ip", {"A": droplet.ipv4}, droplet,
                      reserved_ip=change)


# --- applying with a rollback ----------------------------------------------------


def apply_changes(cloud: Cloud, zone: str, changes: Sequence[RecordChange],
                  applied: list[RecordChange] | None = None) -> list[RecordChange]:
    """Apply ``changes`` in order; if any fails (or Ctrl-C), put back those already applied and re-raise.

    Like pipx's ``preserve_venv``. ``applied`` (if given) is filled as changes land, so a caller
    sees what was done. If the rollback itself fails, the error names the records left changed.
    """
    done: list[RecordChange] = [] if applied is None else applied
    try:
        for change in changes:
            if not change.changes_anything:
                continue
            cloud.update_record(zone, change.id, data=change.after_data,
                                ttl=change.after_ttl if change.after_ttl != change.before_ttl else None)
            done.append(change)
            log.info("changed %s", change.describe())
    except BaseException as exc:
        failed = rollback(cloud, zone, done)
        if failed:
            left = "; ".join(failed)
            raise RollbackFailed(f"{exc}; rolling back the records already changed ALSO failed, these are left "
                                f"changed: {left}") from exc
        if done and isinstance(exc, RelaunchError):
            raise RelaunchError(f"{exc} (the {len(done)} record(s) already changed were put back)") from exc
        raise
    return done


def rollback(cloud: Cloud, zone: str, done: Sequence[RecordChange]) -> list[str]:
    """Put back each change in ``done`` (newest first); return what could not be put back (empty: all)."""
    failed = []
    for change in reversed(done):
        try:
            cloud.update_record(zone, change.id, data=change.before_data,
                                ttl=change.before_ttl if change.before_ttl != change.after_ttl else None)
            log.warning("rolled back %s %s to %s", change.type, change.name, change.before_data)
        except Exception as exc:  # keep going: every other record still deserves its rollback
            failed.append(f"{change.describe()} ({exc})")
    return failed


def _journal_entry(plan: SwitchPlan, forced: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "at": _now(), "target": plan.target, "via": plan.via, "addresses": plan.addresses,
        "forced": forced, "status": "in-progress",
        # The state BEFORE the switch, for rollback and `old`.
        "records": [{"id": c.id, "name": c.name, "type": c.type, "data": c.before_data, "ttl": c.before_ttl}
                    for c in plan.changes],
    }
    if plan.reserved_ip:
        entry["reserved_ip"] = {"ip": plan.reserved_ip.ip, "droplet_id": plan.reserved_ip.before_droplet}
    return entry


def _set_status(site: str, at: str, status: str) -> None:
    journal = load_journal(site)
    for entry in journal["switches"]:
        if entry.get("at") == at and entry.get("status") == "in-progress":
            entry["status"] = status
    save_journal(site, journal)


# --- the switch ----------------------------------------------------------------


def _default_verifier(dns_port: int | None) -> tuple[Verifier | None, Any, str | None]:
    try:
        from relaunch.dns import authoritative  # type: ignore[attr-defined]
    except ImportError:
        return None, None, "relaunch.dns.authoritative is not available"
    return authoritative.wait_until_answers, authoritative.authoritative_servers_for, None


def verify_records(plan: SwitchPlan, verify: Verifier, servers: Any, timeout: float) -> Verification:
    """Ask ``verify`` (once per record type) until every switched name answers its new address."""
    started = time.monotonic()
    answers: dict[str, Any] = {}
    ok = True
    for rdtype in ("A", "AAAA"):
        names = sorted({_fqdn(c.name, plan.zone) for c in plan.changes if c.type == rdtype})
        if not names:
            continue
        remaining = max(1.0, timeout - (time.monotonic() - started))
        got = verify(names, rdtype, plan.addresses[rdtype], servers, remaining)
        ok = ok and bool(getattr(got, "ok", False))
        answers[rdtype] = getattr(got, "answers", None)
    return Verification(ok=ok, seconds=time.monotonic() - started, answers=answers)


def _refuse_outside_sandbox(cloud: Cloud, inv: Inventory, addresses: Sequence[str]) -> None:
    """For a sandbox site, refuse an address that is no sandbox Droplet's, before any request goes there.

    The sandbox's traffic stays on its own network: a health check must never be sent to
    an address outside it (a typo, or a real host's address in a sandbox inventory).
    """
    if inv.provider.kind != "sandbox":
        return
    droplets = cloud.list_droplets()
    known = {d.ipv4 for d in droplets if d.ipv4} | {str(ipaddress.ip_address(d.ipv6)) for d in droplets if d.ipv6}
    for address in addresses:
        if str(ipaddress.ip_address(address.strip("[]"))) not in known:
            raise RelaunchError(
                f"site {inv.site!r} lives in the sandbox, and {address} is no sandbox Droplet's address; "
                "refusing to send it anything (switch to a sandbox Droplet by name or address)"
            )


def switch(
    cloud: Cloud,
    inv: Inventory,
    target: str,
    *,
    via: Via = "dns",
    force: bool = False,
    dry_run: bool = False,
    wait_ttl: bool = False,
    max_wait_ttl: float = 1800.0,
    verify: Verifier | None = None,
    servers: Any = None,
    dns_port: int | None = None,
    verify_timeout: float = 60.0,
    settle: float | None = None,
    health: Callable[[Inventory, str], HealthReport] = check_site,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SwitchResult:
    """Switch the site's records (or its Reserved IP) to TARGET; return what was done.

    Refuse (RelaunchError, nothing changed) when a health check fails against the target
    (``force=True`` goes on, and the result's ``forced`` and warnings say so), when another
    switch of the site holds the lock, or when ``plan_switch`` refuses. The previous state is
    journaled before the first change; a failure part-way puts back what changed and re-raises.
    ``wait_ttl`` waits (at most ``max_wait_ttl`` s, with progress) until the TTL remembered by
    ``prepare`` has run out since it was lowered. Verification: ``verify(names, rdtype, expected,
    servers, timeout)``, by default relaunch.dns.authoritative's ``wait_until_answers`` against
    ``authoritative_servers_for(zone, dns_port)``, looked up before any change (failing to find
    them refuses the switch); a failed verification leaves the records switched and makes
    ``result.ok`` False. The records' previous state is read again right before the change (after
    the health checks and any TTL wait): that is what the journal keeps and a rollback restores.
    ``dry_run`` plans and runs the health checks only.
    ``settle``: after a verified DNS switch, wait that many seconds (with progress), then put
    back the TTLs ``prepare`` lowered (``result.ttl_restored``): how a rebuild ends.
    """
    say = progress or (lambda msg: log.info("%s", msg))
    result = _switch_locked(cloud, inv, target, via, force, dry_run, wait_ttl, max_wait_ttl, verify, servers,
                            dns_port, verify_timeout, health, say, sleep)
    if settle is not None and not dry_run and result.ok and result.plan.via == "dns":
        t = time.monotonic()
        _wait(settle, "settling before the TTL is restored", say, sleep)
        result.ttl_restored = restore_ttl(cloud, inv)
        if not result.ttl_restored.changes:
            result.warnings.append("settle: no TTL to restore (it was not lowered with prepare, or already restored)")
        result.phases["settle"] = time.monotonic() - t
    return result


def _switch_locked(
    cloud: Cloud, inv: Inventory, target: str, via: Via, force: bool, dry_run: bool, wait_ttl: bool,
    max_wait_ttl: float, verify: Verifier | None, servers: Any, dns_port: int | None, verify_timeout: float,
    health: Callable[[Inventory, str], HealthReport], say: Progress, sleep: Callable[[float], None],
) -> SwitchResult:
    phases: dict[str, float] = {}
    lock = contextlib.nullcontext() if dry_run else site_lock(inv.site)
    with lock:
        t = time.monotonic()
        plan = plan_switch(cloud, inv, target, via)
        phases["plan"] = time.monotonic() - t
        result = SwitchResult(plan=plan, dry_run=dry_run, phases=phases)
        where = ", ".join(plan.health_addresses)
        _refuse_outside_sandbox(cloud, inv, plan.health_addresses)

        t = time.monotonic()
        say(f"health checks against {where}")
        reports = [health(inv, address) for address in plan.health_addresses]
        report = HealthReport(where, [r for each in reports for r in each.results])
        result.health = report
        phases["health"] = time.monotonic() - t
        if not report.ok:
            why = "; ".join(r.describe() for r in report.failures()) or "the site has no health checks"
            if not force:
                raise RelaunchError(f"refusing to switch {inv.site} to {target} ({where}): "
                                    f"health check failed: {why} (force overrides)")
            result.forced = True
            result.warnings.append(f"FORCED: switching although health checks fail against "
                                   f"{where}: {why}")
            log.warning("%s", result.warnings[-1])
        if dry_run:
            return result

        skipped = None
        if plan.via == "dns":
            # Who verifies is known before anything changes: a lookup failing after the change
            # would leave the records switched and unverified.
            t = time.monotonic()
            verify, servers, skipped = _verifier_and_servers(inv, verify, servers, dns_port)
            phases["name servers"] = time.monotonic() - t

        if wait_ttl and plan.via == "dns":
            t = time.monotonic()
            result.waited_ttl = _wait_out_ttl(inv, max_wait_ttl, say, sleep, result.warnings)
            phases["wait ttl"] = time.monotonic() - t

        # The state to journal and to put back is the one right before the change, not the one
        # planned before the health checks and a wait of up to max_wait_ttl.
        plan = _replan(cloud, inv, target, via, plan)
        result.plan = plan
        journal = load_journal(inv.site)
        entry = _journal_entry(plan, result.forced)
        journal["switches"].append(entry)
        save_journal(inv.site, journal)  # before the first change

        t = time.monotonic()
        try:
            if plan.via == "reserved-ip":
                result.reserved_ip_after = _move_reserved_ip(cloud, plan)
            else:
                apply_changes(cloud, plan.zone, plan.changes, result.applied)
        except RollbackFailed:
            _set_status(inv.site, entry["at"], "rollback-failed")  # `old` still restores it
            raise
        except BaseException:
            _set_status(inv.site, entry["at"], "rolled-back")
            raise
        _set_status(inv.site, entry["at"], "done")
        if plan.via == "dns":
            _remember_lowered_ttls(inv.site, result.applied, result.warnings)
        phases["change"] = time.monotonic() - t

        if plan.via == "dns":
            say("verifying the authoritative answers")
            t = time.monotonic()
            if verify is None:
                result.verification = Verification(ok=True, seconds=0.0, skipped=skipped)
                result.warnings.append(f"not verified: {skipped}")
            else:
                result.verification = verify_records(plan, verify, servers, verify_timeout)
            phases["verify"] = time.monotonic() - t
        return result


def _verifier_and_servers(inv: Inventory, verify: Verifier | None, servers: Any,
                          dns_port: int | None) -> tuple[Verifier | None, Any, str | None]:
    """Return (verifier, the zone's authoritative servers, why there is no verifier).

    Raise RelaunchError when the servers cannot be found (or there are none): before any change.
    A sandbox site's servers are the sandbox's own DNS server: without its port, refuse rather
    than ask the system's resolver about a sandbox zone (the sandbox's traffic stays on loopback).
    """
    zone = inv.dns.zone
    skipped = None
    if verify is None:
        verify, servers_for, skipped = _default_verifier(dns_port)
        if verify is not None and servers is None and dns_port is None and inv.provider.kind == "sandbox":
            raise RelaunchError(f"site {inv.site!r} lives in the sandbox: its switch is verified on the sandbox's "
                                "DNS server, whose port was not given (open_cloud returns it); nothing was changed")
        if verify is not None and servers is None:
            try:
                servers = servers_for(zone, dns_port)
            except RelaunchError as exc:
                raise RelaunchError(f"{exc}; nothing was changed (the switch is verified on the zone's name servers, "
                                    "so they must be known first)") from None
            if not servers:
                raise RelaunchError(f"no authoritative name servers found for {zone}; nothing was changed")
    return verify, servers, skipped


def _replan(cloud: Cloud, inv: Inventory, target: str, via: Via, checked: SwitchPlan) -> SwitchPlan:
    """Plan again from the current records; refuse if the target's addresses are not the ones health-checked."""
    plan = plan_switch(cloud, inv, target, via)
    if plan.addresses != checked.addresses:
        now, then = (", ".join(p.addresses.values()) for p in (plan, checked))
        raise RelaunchError(f"target {target!r} is now {now}, not {then} that the health checks passed "
                            "against; nothing was changed: run the switch again")
    return plan


def _remember_lowered_ttls(site: str, applied: Sequence[RecordChange], warnings: list[str]) -> None:
    """A switch that lowered a TTL (``old`` going back to before a TTL restore) remembers the higher one.

    So ``restore_ttl`` can still put it back: no TTL is left lowered with nothing to restore it.
    """
    lowered = [c for c in applied if c.before_ttl and c.after_ttl and c.after_ttl < c.before_ttl]
    if not lowered:
        return
    _remember_ttls(site, lowered, lowered_now=False)
    highest = max(c.before_ttl or 0 for c in lowered)
    warnings.append(f"TTL lowered back to what it was before the last switch; `--restore-ttl` puts back "
                    f"{highest} s")


def _remember_ttls(site: str, changes: Sequence[RecordChange], *, lowered_now: bool) -> None:
    """Journal each changed record's TTL before the change, for ``restore_ttl`` (a TTL already remembered is kept).

    ``lowered_now``: the TTL is lowered from now on (``prepare``: ``--wait-ttl`` counts from
    here); otherwise an earlier time it was lowered at is kept.
    """
    journal = load_journal(site)
    remembered = journal["ttl"].get("records") or {}
    for c in changes:
        remembered.setdefault(str(c.id), {"name": c.name, "type": c.type, "ttl": c.before_ttl})
    since = _now() if lowered_now else journal["ttl"].get("prepared_at") or _now()
    journal["ttl"] = {"prepared_at": since, "records": remembered}
    save_journal(site, journal)


def _move_reserved_ip(cloud: Cloud, plan: SwitchPlan) -> int:
    change = plan.reserved_ip
    assert change is not None
    try:
        after = cloud.assign_reserved_ip(change.ip, change.after_droplet)
    except BaseException:
        # The assign may have happened before the failure: put the IP back where it was.
        with contextlib.suppress(Exception):
            if change.before_droplet is not None:
                cloud.assign_reserved_ip(change.ip, change.before_droplet)
        raise
    if after.droplet_id != change.after_droplet:
        raise RelaunchError(f"Reserved IP {change.ip} is assigned to {after.droplet_id} after the assign to "
                            f"{change.after_droplet}")
    return change.after_droplet


def _wait_out_ttl(inv: Inventory, bound: float, say: Progress, sleep: Callable[[float], None],
                  warnings: list[str]) -> float:
    """Sleep until the TTLs remembered by ``prepare`` have run out since they were lowered; return seconds slept."""
    ttl = load_journal(inv.site).get("ttl") or {}
    if not ttl.get("records"):
        warnings.append("wait_ttl: the TTL was not lowered with prepare, so there is no previous TTL to wait out")
        return 0.0
    lowered = datetime.fromisoformat(ttl["prepared_at"])
    old = max(int(r["ttl"] or 0) for r in ttl["records"].values())
    remaining = old - (datetime.now(timezone.utc) - lowered).total_seconds()
    if remaining <= 0:
        return 0.0
    if remaining > bound:
        warnings.append(f"wait_ttl: waited {bound:.0f} s of the {remaining:.0f} s left of the previous TTL "
                        f"({old} s); some resolvers may still cache the old address with the old TTL")
        remaining = bound
    return _wait(remaining, "waiting out the previous TTL", say, sleep)


def _wait(seconds: float, what: str, say: Progress, sleep: Callable[[float], None]) -> float:
    """Sleep ``seconds`` in steps of at most 10 s, saying how long is left before each; return seconds slept."""
    waited = 0.0
    while waited < seconds:
        step = min(10.0, seconds - waited)
        say(f"{what}: {seconds - waited:.0f} s left")
        sleep(step)
        waited += step
    return waited


# --- TTL choreography ------------------------------------------------------------


def prepare(cloud: Cloud, inv: Inventory, *, dry_run: bool = False) -> TtlResult:
    """Lower the TTL of the site's records to ``dns.switch_ttl``, remembering the old TTL in the journal.

    Records already at or below it are left alone. Preparing twice keeps the first remembered
    TTL. ``wait_seconds`` is the highest old TTL: how long resolvers may still hold it.
    """
    with contextlib.nullcontext() if dry_run else site_lock(inv.site):
        low = inv.dns.switch_ttl
        changes = [RecordChange(r.id, r.name, r.type, r.data, r.ttl, r.data, low)
                   for r in _site_records(cloud, inv) if (r.ttl or 0) > low]
        wait = max((c.before_ttl or 0 for c in changes), default=0)
        if dry_run or not changes:
            return TtlResult(changes, wait, dry_run)
        _remember_ttls(inv.site, changes, lowered_now=True)  # before the first change
        apply_changes(cloud, inv.dns.zone, changes)
        return TtlResult(changes, wait)


def restore_ttl(cloud: Cloud, inv: Inventory, *, dry_run: bool = False) -> TtlResult:
    """Put back the TTLs remembered by ``prepare`` (a record gone since is skipped with a warning)."""
    with contextlib.nullcontext() if dry_run else site_lock(inv.site):
        journal = load_journal(inv.site)
        remembered = (journal.get("ttl") or {}).get("records") or {}
        current = {r.id: r for r in cloud.list_records(inv.dns.zone)}
        changes = []
        for rid, rec in sorted(remembered.items()):
            now = current.get(int(rid))
            if now is None:
                log.warning("record %s (%s %s) is gone; its TTL cannot be restored", rid, rec["type"], rec["name"])
                continue
            if now.ttl != rec["ttl"]:
                changes.append(RecordChange(now.id, now.name, now.type, now.data, now.ttl, now.data, rec["ttl"]))
        if dry_run:
            return TtlResult(changes, 0, True)
        apply_changes(cloud, inv.dns.zone, changes)
        journal["ttl"] = {}
        save_journal(inv.site, journal)
        return TtlResult(changes)


# --- where the site's cloud is ------------------------------------------------------


def open_cloud(inv: Inventory) -> tuple[Cloud, int | None]:
    """Return the Cloud for the site's provider and the port of its authoritative DNS (sandbox) or None.

    A sandbox site uses the running sandbox (`fab sandbox-up`); DigitalOcean uses the
    inventory's provider.token (`relaunch.cloud.open_site_cloud`; $DIGITALOCEAN_END_POINT if set). Raise RelaunchError if the
    sandbox is not running.
    """
    if inv.provider.kind == "sandbox":
        return open_local_cloud(inv.site)
    return open_site_cloud(inv), None
