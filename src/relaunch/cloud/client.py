"""`Cloud`: the narrow interface relaunch uses to drive DigitalOcean.

Every method either returns a small dataclass (see models.py) or raises
`relaunch.errors.RelaunchError` (a `CloudError` for API failures) whose message
says what was being done, the HTTP status and the API's message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import re
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar
from urllib.parse import quote

import digitalocean
import requests

from relaunch.errors import RelaunchError

from . import ssh
from .config import DEFAULT_ENDPOINT, endpoint_from_env, load_token
from .models import DnsRecord, Droplet, ReservedIp, Snapshot, SshKey
from .retry import RetryPolicy, backoff_delay
from .transport import DEFAULT_TIMEOUT, CloudError, CloudNotFound, Transport, translate

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_FINGERPRINT = re.compile(r"^([0-9a-f]{2}:){15}[0-9a-f]{2}$")


def ssh_key_fingerprint(public_key: str) -> str:
    """Given an OpenSSH public key line, return DigitalOcean's fingerprint for it (MD5, colon-separated).

    Raise RelaunchError if the text is not a public key.
    """
    fields = public_key.strip().split()
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (IndexError, binascii.Error):
        raise RelaunchError("not an OpenSSH public key (expected 'TYPE BASE64 [COMMENT]')") from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


def _q(segment: Any) -> str:
    """Quote one path segment (a domain or an IP reaches a URL path)."""
    return quote(str(segment), safe="")


class Cloud:
    """DigitalOcean through python-digitalocean, with timeouts, retries and clear errors.

    Construct with `Cloud(token=..., endpoint="http://127.0.0.1:PORT/v2/")`
    (a sandbox) or `Cloud.from_env()`. `retry` bounds API retries; its
    `sleep`/`monotonic`/`wall_clock` are also used to pace polling, so tests
    inject them once. The token is held only by the transport and never shown.
    """

    def __init__(
        self,
        *,
        token: str,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        poll_interval: float = 1.0,
        poll_max_interval: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self._t = Transport(token=token, endpoint=endpoint, timeout=timeout, policy=retry, session=session)
        self.endpoint = self._t.endpoint
        self.timeout = self._t.timeout
        self._policy = self._t.policy
        self._poll_interval = poll_interval
        self._poll_max = poll_max_interval

    @classmethod
    def from_env(
        cls,
        *,
        token_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> "Cloud":
        """Return a Cloud for $DIGITALOCEAN_END_POINT (default: the public API).

        The token is read from `token_file` (mode 600) if given, else from
        $DIGITALOCEAN_ACCESS_TOKEN. Other keyword arguments go to the constructor.
        """
        return cls(token=load_token(token_file, environ), endpoint=endpoint_from_env(environ), **kwargs)

    def __repr__(self) -> str:
        return f"Cloud(endpoint={self.endpoint!r}, timeout={self.timeout})"

    def close(self) -> None:
        self._t.close()

    def __enter__(self) -> "Cloud":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------

    @contextlib.contextmanager
    def _doing(self, what: str) -> Iterator[None]:
        """Turn any failure inside into a RelaunchError that starts with `what`."""
        try:
            yield
        except CloudError as exc:
            raise exc.in_context(what) from None
        except RelaunchError as exc:
            raise RelaunchError(f"{what}: {exc}") from None
        except (digitalocean.Error, requests.RequestException, KeyError, IndexError, TypeError, ValueError) as exc:
            raise translate(exc, what, self._t._scrub) from None

    def _get(self, path: str, params: dict | None = None) -> Any:
        return self._t.get_data(path, "GET", params)

    def _poll_delays(self) -> Iterator[float]:
        delay = self._poll_interval
        while True:
            yield delay
            delay = min(self._poll_max, delay * 1.5)

    def _create_deduplicated(self, what: str, create: Callable[[], _T], find: Callable[[], _T | None]) -> _T:
        """Run `create`; after an ambiguous failure, adopt what `find` finds, else try again.

        A POST that fails with a 5xx or a lost connection may have created the
        resource anyway. Retrying blindly could make two Droplets (billed) or
        two records; so we look for the result first and retry only when
        nothing is there. Bounded by the retry policy's attempts.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return create()
            except CloudError as exc:
                if not exc.ambiguous:
                    raise
                log.warning("%s: ambiguous failure (%s); checking whether it happened anyway", what, exc)
                found = find()
                if found is not None:
                    log.info("%s: it did; using the existing one", what)
                    return found
                if attempt >= self._policy.max_attempts:
                    raise exc.in_context(f"gave up after {attempt} attempts, none of which created it") from None
                self._policy.sleep(backoff_delay(attempt, self._policy))

    # --- account and keys -------------------------------------------------

    def check_account(self) -> None:
        """Return if the token is accepted (lists one SSH key); raise RelaunchError otherwise.

        Uses GET /v2/account/keys rather than /v2/account: it needs the same
        token and the sandbox implements it.
        """
        with self._doing("checking the DigitalOcean API token"):
            self._t.request("GET", "account/keys", {"per_page": 1, "page": 1})

    def list_ssh_keys(self) -> list[SshKey]:
        with self._doing("listing SSH keys"):
            return [SshKey.from_api(k) for k in self._get("account/keys").get("ssh_keys", [])]

    def ensure_ssh_key(self, public_key: str, name: str) -> SshKey:
        """Return the registered SSH key with `public_key`'s fingerprint, registering it as `name` if absent."""
        fingerprint = ssh_key_fingerprint(public_key)
        what = f"registering SSH key {name!r} ({fingerprint})"

        def find() -> SshKey | None:
            return next((k for k in self.list_ssh_keys() if k.fingerprint == fingerprint), None)

        def create() -> SshKey:
            key = self._t.make(digitalocean.SSHKey, name=name, public_key=public_key.strip())
            key.create()
            return SshKey(id=int(key.id), fingerprint=fingerprint, name=name)

        with self._doing(what):
            existing = find()
            if existing is not None:
                return existing
            return self._create_deduplicated(what, create, find)

    # --- actions ----------------------------------------------------------

    def wait_for_action(self, action_id: int, *, what: str = "action", timeout: float = 600.0) -> dict:
        """Poll GET /v2/actions/{id} until completed; return the action's JSON.

        Raise RelaunchError if it errored or is still in progress after `timeout` seconds.
        """
        started = self._policy.monotonic()
        delays = self._poll_delays()
        with self._doing(f"{what} (action {action_id})"):
            while True:
                action = self._t.make(digitalocean.Action, id=action_id)
                action.load_directly()
                status = action.status
                if status == "completed":
                    log.debug("%s: action %s completed", what, action_id)
                    return {k: getattr(action, k, None) for k in
                            ("id", "status", "type", "started_at", "completed_at", "resource_id", "resource_type")}
                if status == "errored":
                    raise RelaunchError(
                        f"the API reports the {action.type} action on {action.resource_type} "
                        f"{action.resource_id} as errored"
                    )
                if status != "in-progress":
                    raise RelaunchError(f"action {action_id} has an unknown status {status!r}")
                delay = next(delays)
                if self._policy.monotonic() - started + delay > timeout:
                    raise RelaunchError(f"action still in progress after {timeout:.0f} s")
                self._policy.sleep(delay)

    def _wait_links(self, data: Any, what: str, timeout: float) -> None:
        for link in ((data or {}).get("links") or {}).get("actions") or []:
            self.wait_for_action(int(link["id"]), what=what, timeout=timeout)

    # --- droplets ---------------------------------------------------------

    def list_droplets(self, tag: str | None = None) -> list[Droplet]:
        """Return all Droplets, or those carrying `tag`."""
        params = {"tag_name": tag} if tag else None
        with self._doing(f"listing droplets{f' tagged {tag!r}' if tag else ''}"):
            return [Droplet.from_api(d) for d in self._get("droplets", params).get("droplets", [])]

    def get_droplet(self, droplet_id: int) -> Droplet:
        """Return Droplet `droplet_id`; raise CloudNotFound if it does not exist."""
        with self._doing(f"reading droplet {droplet_id}"):
            return Droplet.from_api(self._get(f"droplets/{int(droplet_id)}")["droplet"])

    def create_droplet(
        self,
        *,
        name: str,
        region: str,
        size: str,
        image: str | int,
        ssh_keys: Sequence[int | str] = (),
        user_data: str | None = None,
        tags: Sequence[str] = (),
        ipv6: bool = False,
        monitoring: bool = False,
        timeout: float = 600.0,
        ssh_timeout: float | None = 300.0,
        ssh_port: int = 22,
        requested: Callable[[int], None] | None = None,
    ) -> Droplet:
        """Create a Droplet, wait for its create action and its public IPv4, then for SSH; return it.

        `image` is a slug ("debian-12-x64") or a snapshot id. `ssh_keys` are key
        ids or MD5 fingerprints (see `ensure_ssh_key`). `ssh_timeout=None` skips
        the SSH wait. `requested` is called with the new id once the API has
        accepted the request: what follows is the cloud making the Droplet.
        Raise RelaunchError on any failure; a Droplet that was created but
        failed later is left in place (its id is in the message) for the
        caller to inspect or destroy.
        """
        keys: list[int | str] = []
        for k in ssh_keys:
            # The library would upload anything else as a new public key, through
            # its own unrouted transport: refuse it here.
            if isinstance(k, int) or (isinstance(k, str) and _FINGERPRINT.match(k.lower())):
                keys.append(k if isinstance(k, int) else k.lower())
            else:
                raise RelaunchError(f"ssh_keys must be key ids or MD5 fingerprints, not {str(k)[:30]!r}")
        if isinstance(image, str) and image.isdigit():
            image = int(image)
        what = f"creating droplet {name!r} in {region}"

        with self._doing(what):
            # Ids of same-named Droplets that exist before we start: after an
            # ambiguous failure only a Droplet not in this set is ours.
            listing_tag = tags[0] if tags else None
            before = {d.id for d in self.list_droplets(listing_tag) if d.name == name}
            if before:
                log.warning("%s: %d droplet(s) with that name already exist: %s", what, len(before), sorted(before))

            def create() -> tuple[int, int | None]:
                d = self._t.make(
                    digitalocean.Droplet, name=name, region=region, size_slug=size, image=image,
                    ssh_keys=keys, user_data=user_data, tags=list(tags), ipv6=ipv6, monitoring=monitoring,
                )
                d.create()
                return int(d.id), (int(d.action_ids[0]) if d.action_ids else None)

            def find() -> tuple[int, int | None] | None:
                new = [d for d in self.list_droplets(listing_tag) if d.name == name and d.id not in before]
                if not new:
                    return None
                droplet_id = max(d.id for d in new)
                actions = self._get(f"droplets/{droplet_id}/actions").get("actions", [])
                create_ids = [int(a["id"]) for a in actions if a.get("type") == "create"]
                return droplet_id, (create_ids[0] if create_ids else None)

            droplet_id, action_id = self._create_deduplicated(what, create, find)
        log.info("%s: droplet %s requested", what, droplet_id)
        if requested is not None:
            requested(droplet_id)

        what = f"creating droplet {name!r} (id {droplet_id})"
        if action_id is not None:
            self.wait_for_action(action_id, what=what, timeout=timeout)
        droplet = self._wait_droplet(droplet_id, what, timeout)
        if ssh_timeout is not None:
            assert droplet.ipv4 is not None
            self.wait_for_ssh(droplet.ipv4, port=ssh_port, timeout=ssh_timeout)
        return droplet

    def _wait_droplet(self, droplet_id: int, what: str, timeout: float) -> Droplet:
        """Poll until the Droplet is active with a public IPv4 (the create action may finish first)."""
        started = self._policy.monotonic()
        delays = self._poll_delays()
        while True:
            droplet = self.get_droplet(droplet_id)
            if droplet.status == "active" and droplet.ipv4:
                return droplet
            if droplet.status not in ("new", "active"):
                raise RelaunchError(f"{what}: droplet is {droplet.status!r}, expected it to become active")
            delay = next(delays)
            if self._policy.monotonic() - started + delay > timeout:
                raise RelaunchError(
                    f"{what}: not active with a public IPv4 after {timeout:.0f} s (status {droplet.status!r})"
                )
            self._policy.sleep(delay)

    def wait_for_ssh(self, host: str, *, port: int = 22, timeout: float = 300.0) -> str:
        """Poll until host:port sends an SSH-2.0 banner; return it. See relaunch.cloud.ssh."""
        return ssh.wait_for_ssh(
            host, port, timeout=timeout, interval=self._poll_interval * 2,
            sleep=self._policy.sleep, monotonic=self._policy.monotonic,
        )

    def destroy_droplet(self, droplet_id: int) -> bool:
        """Destroy Droplet `droplet_id`; return False if it was already gone."""
        with self._doing(f"destroying droplet {droplet_id}"):
            try:
                self._t.make(digitalocean.Droplet, id=int(droplet_id)).destroy()
            except CloudNotFound:
                # Also what a retried DELETE sees when the first one worked.
                log.info("droplet %s was already gone", droplet_id)
                return False
        log.info("destroyed droplet %s", droplet_id)
        return True

    def tag_droplet(self, droplet_id: int, tag: str) -> None:
        """Put tag `tag` on Droplet `droplet_id` (the tag is created when it does not exist yet)."""
        with self._doing(f"tagging droplet {droplet_id} {tag!r}"):
            # POST /v2/tags answers 201 with the tag, also when it exists already (DigitalOcean's documented form).
            self._t.request("POST", "tags", {"name": tag}, retry_unsafe=True)
            self._t.request("POST", f"tags/{_q(tag)}/resources",
                            {"resources": [{"resource_id": str(int(droplet_id)), "resource_type": "droplet"}]},
                            retry_unsafe=True)

    def destroy_droplets_by_tag(self, tag: str) -> list[int]:
        """Destroy every Droplet tagged `tag`; return their ids.

        Lists then deletes one by one rather than DELETE /v2/droplets?tag_name=,
        so the caller learns which Droplets went (and an empty tag can never
        mean "all").
        """
        if not tag:
            raise RelaunchError("refusing to destroy droplets by an empty tag")
        ids = [d.id for d in self.list_droplets(tag)]
        return [i for i in ids if self.destroy_droplet(i)]

    def _droplet_action(self, droplet_id: int, verb: str, method: str, *, idempotent: bool, timeout: float,
                        **kwargs: Any) -> dict:
        what = f"{verb.replace('_', ' ')} of droplet {droplet_id}"
        with self._doing(what):
            d = self._t.make(digitalocean.Droplet, id=int(droplet_id), retry_unsafe=idempotent)
            result = getattr(d, method)(**kwargs)
            action_id = int(result["action"]["id"])
        return self.wait_for_action(action_id, what=what, timeout=timeout)

    # power_off, power_on and shutdown name a target state: repeating one after
    # a 5xx cannot do harm, so their POSTs are retried. A reboot or a snapshot
    # repeated would happen twice: not retried; the error says so.
    def power_off(self, droplet_id: int, *, timeout: float = 300.0) -> None:
        self._droplet_action(droplet_id, "power_off", "power_off", idempotent=True, timeout=timeout)

    def power_on(self, droplet_id: int, *, timeout: float = 300.0) -> None:
        self._droplet_action(droplet_id, "power_on", "power_on", idempotent=True, timeout=timeout)

    def shutdown(self, droplet_id: int, *, timeout: float = 300.0) -> None:
        self._droplet_action(droplet_id, "shutdown", "shutdown", idempotent=True, timeout=timeout)

    def reboot(self, droplet_id: int, *, timeout: float = 300.0) -> None:
        self._droplet_action(droplet_id, "reboot", "reboot", idempotent=False, timeout=timeout)

    # --- snapshots --------------------------------------------------------

    def snapshot_droplet(self, droplet_id: int, name: str, *, timeout: float = 3600.0) -> Snapshot:
        """Snapshot Droplet `droplet_id` as `name`, wait for it, and return the new snapshot.

        The Droplet is not powered off first (call power_off for a consistent disk).
        """
        self._droplet_action(droplet_id, f"snapshot {name!r}", "take_snapshot", idempotent=False,
                             timeout=timeout, snapshot_name=name)
        candidates = [s for s in self.list_snapshots(droplet_id) if s.name == name]
        if not candidates:
            raise RelaunchError(f"snapshot {name!r} of droplet {droplet_id} completed but is not listed")
        return max(candidates, key=lambda s: s.id)

    def list_snapshots(self, droplet_id: int | None = None) -> list[Snapshot]:
        """Return the snapshots of Droplet `droplet_id`, or all Droplet snapshots."""
        if droplet_id is not None:
            with self._doing(f"listing snapshots of droplet {droplet_id}"):
                data = self._get(f"droplets/{int(droplet_id)}/snapshots")
                return [Snapshot.from_api(s, droplet_id) for s in data.get("snapshots", [])]
        with self._doing("listing snapshots"):
            data = self._get("snapshots", {"resource_type": "droplet"})
            return [Snapshot.from_api(s) for s in data.get("snapshots", [])]

    def delete_snapshot(self, snapshot_id: int | str) -> bool:
        """Delete a snapshot; return False if it was already gone."""
        with self._doing(f"deleting snapshot {snapshot_id}"):
            try:
                self._t.request("DELETE", f"snapshots/{_q(snapshot_id)}")
            except CloudNotFound:
                return False
        return True

    def tag_snapshot(self, snapshot_id: int | str, tags: list[str]) -> None:
        """Put ``tags`` on a Droplet snapshot (an image, for the tags API); each tag is made if missing."""
        for tag in tags:
            with self._doing(f"tagging snapshot {snapshot_id} with {tag}"):
                self._t.request("POST", "tags", {"name": tag})  # an existing tag is answered as is
                self._t.request("POST", f"tags/{_q(tag)}/resources",
                                {"resources": [{"resource_id": str(snapshot_id), "resource_type": "image"}]},
                                retry_unsafe=True)  # tagging twice is tagging once

    # --- domains -----------------------------------------------------------

    def list_domains(self) -> list[str]:
        """Return the names of the zones hosted in this account."""
        with self._doing("listing domains"):
            return [d["name"] for d in self._get("domains").get("domains", [])]

    def ensure_domain(self, domain: str) -> bool:
        """Make sure zone `domain` exists (created empty if not); return whether it was created."""
        if domain in self.list_domains():
            return False
        what = f"creating domain {domain}"
        with self._doing(what):
            # POST /v2/domains without ip_address: an empty zone (SOA and NS only).
            self._create_deduplicated(
                what,
                lambda: self._t.request("POST", "domains", {"name": domain}),
                lambda: True if domain in self.list_domains() else None,
            )
        return True

    # --- DNS records --------------------------------------------------------

    def list_records(self, domain: str, *, type: str | None = None, name: str | None = None) -> list[DnsRecord]:
        """Return `domain`'s records, optionally only those of `type` and/or relative `name` ("@", "www")."""
        with self._doing(f"listing DNS records of {domain}"):
            data = self._get(f"domains/{_q(domain)}/records")
            records = [DnsRecord.from_api(r) for r in data.get("domain_records", [])]
        return [r for r in records if (type is None or r.type == type) and (name is None or r.name == name)]

    def create_record(self, domain: str, *, type: str, name: str, data: str, ttl: int = 1800) -> DnsRecord:
        """Create a record in `domain` and return it."""
        what = f"creating DNS record {type} {name} -> {data} in {domain}"

        def create() -> DnsRecord:
            dom = self._t.make(digitalocean.Domain, name=domain)
            created = dom.create_new_domain_record(type=type, name=name, data=data, ttl=ttl)
            return DnsRecord.from_api(created["domain_record"])

        def find() -> DnsRecord | None:
            same = [r for r in self.list_records(domain, type=type, name=name) if r.data == data]
            return same[0] if same else None

        with self._doing(what):
            return self._create_deduplicated(what, create, find)

    def update_record(self, domain: str, record_id: int, *, data: str | None = None, ttl: int | None = None,
                      name: str | None = None) -> DnsRecord:
        """Change a record's data, TTL and/or name (PATCH: other fields are kept); return it."""
        body = {k: v for k, v in (("data", data), ("ttl", ttl), ("name", name)) if v is not None}
        if not body:
            raise RelaunchError("update_record: nothing to change")
        with self._doing(f"updating DNS record {record_id} in {domain}"):
            # PATCH of the same fields twice is harmless: retried like a PUT.
            result = self._t.request("PATCH", f"domains/{_q(domain)}/records/{int(record_id)}", body,
                                     retry_unsafe=True)
            return DnsRecord.from_api(result["domain_record"])

    def delete_record(self, domain: str, record_id: int) -> bool:
        """Delete a record; return False if it was already gone."""
        with self._doing(f"deleting DNS record {record_id} in {domain}"):
            try:
                self._t.make(digitalocean.Record, domain_name=domain, id=int(record_id)).destroy()
            except CloudNotFound:
                return False
        return True

    # --- Reserved IPs (the library only knows the deprecated floating_ips) ---

    def list_reserved_ips(self) -> list[ReservedIp]:
        with self._doing("listing reserved IPs"):
            return [ReservedIp.from_api(r) for r in self._get("reserved_ips").get("reserved_ips", [])]

    def get_reserved_ip(self, ip: str) -> ReservedIp:
        with self._doing(f"reading reserved IP {ip}"):
            return ReservedIp.from_api(self._get(f"reserved_ips/{_q(ip)}")["reserved_ip"])

    def create_reserved_ip(self, *, region: str | None = None, droplet_id: int | None = None,
                           timeout: float = 300.0) -> ReservedIp:
        """Reserve a new IP in `region`, or assigned to `droplet_id` (exactly one); wait; return it.

        Not retried after a 5xx: a second reserved IP would be billed, and
        nothing distinguishes ours from another unassigned one in the region.
        """
        if (region is None) == (droplet_id is None):
            raise RelaunchError("create_reserved_ip needs exactly one of region and droplet_id")
        body: dict[str, Any] = {"region": region} if region else {"droplet_id": int(droplet_id)}  # type: ignore[arg-type]
        what = f"reserving an IP {'in ' + region if region else 'for droplet ' + str(droplet_id)}"
        with self._doing(what):
            data = self._t.request("POST", "reserved_ips", body)
            ip = data["reserved_ip"]["ip"]
        self._wait_links(data, f"{what} ({ip})", timeout)
        return self.get_reserved_ip(ip)

    def _reserved_ip_action(self, ip: str, body: dict, what: str, timeout: float) -> ReservedIp:
        with self._doing(what):
            # assign/unassign name a target state: safe to repeat after a 5xx.
            data = self._t.request("POST", f"reserved_ips/{_q(ip)}/actions", body, retry_unsafe=True)
            action_id = int(data["action"]["id"])
        self.wait_for_action(action_id, what=what, timeout=timeout)
        return self.get_reserved_ip(ip)

    def assign_reserved_ip(self, ip: str, droplet_id: int, *, timeout: float = 300.0) -> ReservedIp:
        """Point reserved IP `ip` at Droplet `droplet_id`; wait; return its new state."""
        return self._reserved_ip_action(ip, {"type": "assign", "droplet_id": int(droplet_id)},
                                        f"assigning reserved IP {ip} to droplet {droplet_id}", timeout)

    def unassign_reserved_ip(self, ip: str, *, timeout: float = 300.0) -> ReservedIp:
        return self._reserved_ip_action(ip, {"type": "unassign"}, f"unassigning reserved IP {ip}", timeout)

    def delete_reserved_ip(self, ip: str) -> bool:
        """Release reserved IP `ip`; return False if it was already gone."""
        with self._doing(f"releasing reserved IP {ip}"):
            try:
                self._t.request("DELETE", f"reserved_ips/{_q(ip)}")
            except CloudNotFound:
                return False
        return True
