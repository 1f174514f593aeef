"""The simulator's plain resources: SSH keys, domains and records, tags, reserved IPs.

None of them needs the backend. Reserved IPs are taken from 192.0.2.0/24 (TEST-NET-1, a
documentation range): the sandbox only records the assignment, nothing routes to them.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Any, Callable

from relaunch.sandbox import catalogue
from relaunch.sandbox.droplets import TAG_NAME, finish_action, new_action
from relaunch.sandbox.model import Workers, not_found, public, unprocessable
from relaunch.sandbox.sshkeys import InvalidKey, fingerprint
from relaunch.sandbox.store import Store, Txn

RESERVED_IP_RANGE = ipaddress.IPv4Network("192.0.2.0/24")
PROJECT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "relaunch-sandbox/project/default"))
RECORD_TYPES = ("A", "AAAA", "CAA", "CNAME", "MX", "NS", "SOA", "SRV", "TXT")
DEFAULT_TTL = 1800
NAME_SERVERS = ("ns1.digitalocean.com", "ns2.digitalocean.com", "ns3.digitalocean.com")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")


def account() -> dict[str, Any]:
    """Return the ``/v2/account`` object of the one sandbox account."""
    return {
        "droplet_limit": 25,
        "floating_ip_limit": 3,
        "reserved_ip_limit": 3,
        "volume_limit": 100,
        "email": "sandbox@example.invalid",
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "relaunch-sandbox/account")),
        "email_verified": True,
        "status": "active",
        "status_message": "",
    }


# ----- SSH keys -----


class Keys:
    """SSH keys of the account, addressed by numeric id or fingerprint."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self) -> list[dict[str, Any]]:
        return self.store.list("key")

    def get(self, ident: str) -> dict[str, Any]:
        """Return a key by id or fingerprint. 404 if none."""
        key = self._find(self.store.list("key"), ident)
        if key is None:
            raise not_found()
        return key

    def create(self, body: Any) -> dict[str, Any]:
        """Add a key (``name``, ``public_key``). 422 for a bad or already known key."""
        if not isinstance(body, dict):
            raise unprocessable("the request body must be a JSON object")
        name, public_key = body.get("name"), body.get("public_key")
        if not isinstance(name, str) or not name.strip():
            raise unprocessable("name is required")
        if not isinstance(public_key, str):
            raise unprocessable("public_key is required")
        try:
            fp = fingerprint(public_key)
        except InvalidKey as exc:
            raise unprocessable(f"public_key: {exc}") from None
        with self.store.transaction() as txn:
            if any(k["fingerprint"] == fp for k in txn.list("key")):
                raise unprocessable("SSH Key is already in use on your account")
            key = {"id": txn.new_id(), "fingerprint": fp, "public_key": public_key.strip(), "name": name}
            txn.insert("key", key["id"], key)
        return key

    def update(self, ident: str, body: Any) -> dict[str, Any]:
        """Rename a key. 404 if none, 422 without a name."""
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"].strip():
            raise unprocessable("name is required")
        with self.store.transaction() as txn:
            key = self._find(txn.list("key"), ident)
            if key is None:
                raise not_found()
            key["name"] = body["name"]
            txn.put("key", key["id"], key)
        return key

    def delete(self, ident: str) -> None:
        with self.store.transaction() as txn:
            key = self._find(txn.list("key"), ident)
            if key is None:
                raise not_found()
            txn.delete("key", key["id"])

    @staticmethod
    def _find(keys: list[dict[str, Any]], ident: str) -> dict[str, Any] | None:
        for key in keys:
            if str(key["id"]) == ident or key["fingerprint"] == ident:
                return key
        return None


# ----- domains and records -----


class Domains:
    """DNS zones and their records."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self) -> list[dict[str, Any]]:
        return [self._domain_json(d) for d in self.store.list("domain")]

    def get(self, name: str) -> dict[str, Any]:
        doc = self.store.get("domain", name.lower())
        if doc is None:
            raise not_found()
        return self._domain_json(doc)

    def create(self, body: Any) -> dict[str, Any]:
        """Add a zone (``name``, optional ``ip_address`` for an A record at the apex).

        Like DigitalOcean, the zone starts with an SOA and three NS records. 422 for a bad
        or already known name.
        """
        if not isinstance(body, dict):
            raise unprocessable("the request body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not _DOMAIN.match(name.lower()):
            raise unprocessable("name must be a domain name such as example.com")
        name = name.lower()
        ip = body.get("ip_address")
        if ip is not None:
            _check_ip(ip, 4, "ip_address")
        with self.store.transaction() as txn:
            if txn.get("domain", name) is not None:
                raise unprocessable(f"name: the domain {name} already exists")
            txn.insert("domain", name, {"name": name, "ttl": DEFAULT_TTL})
            self._add(txn, name, {"type": "SOA", "name": "@", "data": "1800", "ttl": DEFAULT_TTL})
            for ns in NAME_SERVERS:
                self._add(txn, name, {"type": "NS", "name": "@", "data": ns, "ttl": DEFAULT_TTL})
            if ip is not None:
                self._add(txn, name, {"type": "A", "name": "@", "data": ip, "ttl": DEFAULT_TTL})
        return self.get(name)

    def delete(self, name: str) -> None:
        with self.store.transaction() as txn:
            if not txn.delete("domain", name.lower()):
                raise not_found()
            for rec in txn.list("record"):
                if rec["_"]["domain"] == name.lower():
                    txn.delete("record", rec["id"])

    def records(self, domain: str, type_: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """Return a zone's records, optionally only one ``type`` or one fully qualified ``name``."""
        domain = self.get(domain)["name"]
        out = []
        for rec in self.store.list("record"):
            if rec["_"]["domain"] != domain:
                continue
            if type_ is not None and rec["type"] != type_.upper():
                continue
            if name is not None and _fqdn(rec["name"], domain) != name.lower().rstrip("."):
                continue
            out.append(public(rec))
        return out

    def record(self, domain: str, record_id: str) -> dict[str, Any]:
        rec = self._record_doc(self.store.get, domain, record_id)
        return public(rec)

    def create_record(self, domain: str, body: Any) -> dict[str, Any]:
        """Add a record to a zone. 404 for an unknown zone, 422 naming the bad field."""
        domain = self.get(domain)["name"]
        fields = _record_fields(body, None)
        with self.store.transaction() as txn:
            rec = self._add(txn, domain, fields)
            _bump_serial(txn, domain)
        return public(rec)

    def update_record(self, domain: str, record_id: str, body: Any) -> dict[str, Any]:
        """Change the given fields of a record (PUT and PATCH alike, as DigitalOcean does)."""
        domain = self.get(domain)["name"]
        with self.store.transaction() as txn:
            rec = self._record_doc(txn.get, domain, record_id)
            rec.update(_record_fields(body, rec))
            txn.put("record", rec["id"], rec)
            _bump_serial(txn, domain)
        return public(rec)

    def delete_record(self, domain: str, record_id: str) -> None:
        domain = self.get(domain)["name"]
        with self.store.transaction() as txn:
            rec = self._record_doc(txn.get, domain, record_id)
            txn.delete("record", rec["id"])
            _bump_serial(txn, domain)

    @staticmethod
    def _record_doc(get: Callable[[str, Any], dict[str, Any] | None], domain: str, record_id: str) -> dict[str, Any]:
        rec = get("record", int(record_id)) if record_id.isdigit() else None
        if rec is None or rec["_"]["domain"] != domain.lower():
            raise not_found()
        return rec

    @staticmethod
    def _add(txn: Txn, domain: str, fields: dict[str, Any]) -> dict[str, Any]:
        rec = {
            "id": txn.new_id(),
            "type": fields["type"],
            "name": fields["name"],
            "data": fields["data"],
            "priority": fields.get("priority"),
            "port": fields.get("port"),
            "ttl": fields.get("ttl", DEFAULT_TTL),
            "weight": fields.get("weight"),
            "flags": fields.get("flags"),
            "tag": fields.get("tag"),
            "_": {"domain": domain},
        }
        txn.insert("record", rec["id"], rec)
        return rec

    def _domain_json(self, doc: dict[str, Any]) -> dict[str, Any]:
        lines = [f"$ORIGIN {doc['name']}.", f"$TTL {doc['ttl']}"]
        for rec in self.store.list("record"):
            if rec["_"]["domain"] != doc["name"]:
                continue
            data = rec["data"]
            if rec["type"] == "NS" and "." in data.rstrip(".") and not data.endswith("."):
                data += "."  # DigitalOcean's own NS targets come without the final dot
            if rec["type"] in ("CNAME", "MX", "NS", "SRV") and not data.endswith("."):
                data = _fqdn(data, doc["name"]) + "."
            if rec["type"] == "SOA":
                data = f"{NAME_SERVERS[0]}. hostmaster.{doc['name']}. {zone_serial(doc)} 10800 3600 604800 1800"
            if rec["type"] == "TXT":
                data = '"' + data.replace('"', '\\"') + '"'
            extra = " ".join(str(rec[k]) for k in ("priority", "weight", "port") if rec[k] is not None)
            owner = f"{_fqdn(rec['name'], doc['name'])}."
            lines.append(f"{owner} {rec['ttl']} IN {rec['type']} {extra + ' ' if extra else ''}{data}")
        return {"name": doc["name"], "ttl": doc["ttl"], "zone_file": "\n".join(lines) + "\n"}


def zone_serial(domain_doc: dict[str, Any]) -> int:
    """Return the SOA serial of a zone's stored document (1 until its records first change)."""
    return int(domain_doc.get("serial", 1))


def _bump_serial(txn: Txn, domain: str) -> None:
    # Inside the record change's transaction, so a DNS answer never sees the new records
    # with the old serial.
    doc = txn.get("domain", domain)
    if doc is not None:
        doc["serial"] = zone_serial(doc) + 1
        txn.put("domain", domain, doc)


def fqdn(name: str, domain: str) -> str:
    """Return the fully qualified form (no trailing dot) of a record name or target in ``domain``."""
    return _fqdn(name, domain)


def _fqdn(name: str, domain: str) -> str:
    name = name.lower().rstrip(".")
    if name in ("@", "", domain):
        return domain
    return name if name.endswith("." + domain) else f"{name}.{domain}"


def _check_ip(value: Any, version: int, field: str) -> None:
    try:
        ok = isinstance(value, str) and ipaddress.ip_address(value).version == version
    except ValueError:
        ok = False
    if not ok:
        raise unprocessable(f"{field} must be an IPv{version} address")


def _record_fields(body: Any, current: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a record body (all fields for a new record, the given ones for an update)."""
    if not isinstance(body, dict):
        raise unprocessable("the request body must be a JSON object")
    merged = dict(current or {})
    merged.update({k: v for k, v in body.items() if k in ("type", "name", "data", "priority", "port", "ttl", "weight", "flags", "tag")})
    type_ = merged.get("type")
    if not isinstance(type_, str) or type_.upper() not in RECORD_TYPES:
        raise unprocessable(f"type must be one of {', '.join(RECORD_TYPES)}")
    merged["type"] = type_ = type_.upper()
    for field in ("name", "data"):
        if not isinstance(merged.get(field), str) or not merged[field]:
            raise unprocessable(f"{field} is required")
    if type_ == "A":
        _check_ip(merged["data"], 4, "data")
    if type_ == "AAAA":
        _check_ip(merged["data"], 6, "data")
    for field in ("priority", "port", "weight", "flags"):
        value = merged.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise unprocessable(f"{field} must be a non-negative integer")
    if type_ in ("MX", "SRV") and merged.get("priority") is None:
        raise unprocessable(f"priority is required for {type_} records")
    if type_ == "SRV" and (merged.get("port") is None or merged.get("weight") is None):
        raise unprocessable("port and weight are required for SRV records")
    ttl = merged.get("ttl", DEFAULT_TTL)
    if ttl is None:
        ttl = DEFAULT_TTL
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 30:
        raise unprocessable("ttl must be an integer of at least 30")
    merged["ttl"] = ttl
    return {k: merged.get(k) for k in ("type", "name", "data", "priority", "port", "ttl", "weight", "flags", "tag")}


# ----- tags -----


class Tags:
    """Tags; which Droplets and images (snapshots) carry a tag is stored on them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self, base_url: str) -> list[dict[str, Any]]:
        droplets = self.store.list("droplet")
        return [self._json(t["name"], droplets, base_url) for t in self.store.list("tag")]

    def get(self, name: str, base_url: str) -> dict[str, Any]:
        if self.store.get("tag", name) is None:
            raise not_found()
        return self._json(name, self.store.list("droplet"), base_url)

    def create(self, body: Any, base_url: str) -> dict[str, Any]:
        """Create a tag (an existing one is returned as is). 422 for a bad name."""
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not TAG_NAME.match(name):
            raise unprocessable("name must be 1-255 letters, digits, '_', '-' or ':'")
        with self.store.transaction() as txn:
            if txn.get("tag", name) is None:
                txn.insert("tag", name, {"name": name})
        return self.get(name, base_url)

    def delete(self, name: str) -> None:
        with self.store.transaction() as txn:
            if not txn.delete("tag", name):
                raise not_found()
            for kind, key in (("droplet", "id"), ("snapshot", "id")):
                for doc in txn.list(kind):
                    if name in doc.get("tags", []):
                        doc["tags"].remove(name)
                        txn.put(kind, doc[key], doc)

    def tag(self, name: str, body: Any, assign: bool) -> None:
        """Add (``assign``) or remove a tag on the listed resources: Droplets, and images (Droplet snapshots). 404/422."""
        resources = body.get("resources") if isinstance(body, dict) else None
        if not isinstance(resources, list) or not resources:
            raise unprocessable("resources must be a non-empty list of {resource_id, resource_type}")
        with self.store.transaction() as txn:
            if txn.get("tag", name) is None:
                raise not_found()
            for res in resources:
                kind = {"droplet": "droplet", "image": "snapshot"}.get(
                    res.get("resource_type") if isinstance(res, dict) else None)
                if kind is None:
                    raise unprocessable("resources: only resource_type 'droplet' and 'image' are supported by the sandbox")
                rid = str(res.get("resource_id", ""))
                doc = txn.get(kind, int(rid)) if rid.isdigit() else None
                if doc is None:
                    raise unprocessable(f"resources: no {res['resource_type']} with id {rid!r}")
                tags = doc.setdefault("tags", [])
                if assign and name not in tags:
                    tags.append(name)
                elif not assign and name in tags:
                    tags.remove(name)
                txn.put(kind, doc["id"], doc)

    def _json(self, name: str, droplets: list[dict[str, Any]], base_url: str) -> dict[str, Any]:
        tagged = [d for d in droplets if name in d["tags"]]
        images = [s for s in self.store.list("snapshot") if name in s.get("tags", [])]
        last = f"{base_url}/droplets/{tagged[-1]['id']}" if tagged else ""
        last_image = f"{base_url}/images/{images[-1]['id']}" if images else ""
        counts = {"count": len(tagged), "last_tagged_uri": last}
        empty = {"count": 0, "last_tagged_uri": ""}
        return {
            "name": name,
            "resources": {
                "count": len(tagged) + len(images), "last_tagged_uri": last or last_image,
                "droplets": dict(counts),
                "images": {"count": len(images), "last_tagged_uri": last_image},
                "volumes": dict(empty),
                "volume_snapshots": dict(empty),
                "databases": dict(empty),
            },
        }


# ----- reserved IPs -----


class ReservedIPs:
    """Reserved (formerly floating) IPs from TEST-NET-1 and their assign/unassign actions.

    ``render_droplet`` turns a Droplet id into its JSON (or None if gone).
    """

    def __init__(self, store: Store, workers: Workers, owner: dict[str, Any],
                 render_droplet: Callable[[int], dict[str, Any] | None]) -> None:
        self.store = store
        self.workers = workers
        self.owner = owner
        self.render_droplet = render_droplet

    def list(self) -> list[dict[str, Any]]:
        return [self._json(d) for d in self.store.list("reserved_ip")]

    def get(self, ip: str) -> dict[str, Any]:
        doc = self.store.get("reserved_ip", ip)
        if doc is None:
            raise not_found()
        return self._json(doc)

    def create(self, body: Any, resource_type: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Reserve an address in a region, or assigned to a Droplet (``droplet_id``).

        Return the reserved IP and, when assigned, the assign action. 422 for bad input.
        """
        if not isinstance(body, dict):
            raise unprocessable("the request body must be a JSON object")
        droplet_id, region = body.get("droplet_id"), body.get("region")
        if droplet_id is None and region is None:
            raise unprocessable("droplet_id or region is required")
        with self.store.transaction() as txn:
            droplet = None
            if droplet_id is not None:
                droplet = self._droplet(txn, droplet_id)
                region = droplet["region"]["slug"]
            elif region not in catalogue.REGIONS:
                raise unprocessable(f"region {region!r} is not available")
            taken = {d["ip"] for d in txn.list("reserved_ip")}
            free = next((str(a) for a in RESERVED_IP_RANGE.hosts() if str(a) not in taken), None)
            if free is None:
                raise unprocessable("no reserved IP left in the sandbox's range")
            doc = {"ip": free, "region_slug": region, "droplet_id": None, "locked": False}
            action = None
            if droplet is not None:
                self._unassign_elsewhere(txn, droplet["id"])
                doc.update(droplet_id=droplet["id"], locked=True)
                action = new_action(txn, self.owner, "assign_ip", int(ipaddress.IPv4Address(free)),
                                    resource_type, region)
            txn.insert("reserved_ip", free, doc)
        if action is not None:
            self.workers.spawn(f"assign-{free}", self._complete, free, action["id"])
            action = public(action)
        return self._json(doc), action

    def delete(self, ip: str) -> None:
        with self.store.transaction() as txn:
            if not txn.delete("reserved_ip", ip):
                raise not_found()

    def post_action(self, ip: str, body: Any, resource_type: str) -> dict[str, Any]:
        """Assign (``type: assign``, ``droplet_id``) or unassign an address; return the action."""
        type_ = body.get("type") if isinstance(body, dict) else None
        if type_ not in ("assign", "unassign"):
            raise unprocessable("type must be 'assign' or 'unassign'")
        with self.store.transaction() as txn:
            doc = txn.get("reserved_ip", ip)
            if doc is None:
                raise not_found()
            if doc["locked"]:
                raise unprocessable("The reserved IP already has a pending event.")
            if type_ == "assign":
                droplet = self._droplet(txn, body.get("droplet_id"))
                if droplet["region"]["slug"] != doc["region_slug"]:
                    raise unprocessable("droplet_id: the Droplet is in another region than the reserved IP")
                self._unassign_elsewhere(txn, droplet["id"])
                doc["droplet_id"] = droplet["id"]
            else:
                if doc["droplet_id"] is None:
                    raise unprocessable("The reserved IP is not assigned to a Droplet.")
                doc["droplet_id"] = None
            doc["locked"] = True
            txn.put("reserved_ip", ip, doc)
            action = new_action(txn, self.owner, f"{type_}_ip", int(ipaddress.IPv4Address(ip)),
                                resource_type, doc["region_slug"])
        self.workers.spawn(f"{type_}-{ip}", self._complete, ip, action["id"])
        return public(action)

    def actions(self, ip: str, resource_type: str) -> list[dict[str, Any]]:
        """Return the actions of one address, newest first. 404 for an unknown address."""
        self.get(ip)
        rid = int(ipaddress.IPv4Address(ip))
        return [public(a) for a in reversed(self.store.list("action"))
                if a["resource_id"] == rid and a["resource_type"] in ("reserved_ip", "floating_ip")]

    def action(self, ip: str, action_id: str) -> dict[str, Any]:
        for action in self.actions(ip, ""):
            if str(action["id"]) == action_id:
                return action
        raise not_found()

    def resume(self) -> None:
        """Complete assign/unassign actions a dead simulator left in progress."""
        from relaunch.sandbox.model import owner_alive

        for action in self.store.list("action"):
            if action["status"] == "in-progress" and action["resource_type"] in ("reserved_ip", "floating_ip") \
                    and not owner_alive(action["_"].get("owner")):
                ip = str(ipaddress.IPv4Address(action["resource_id"]))
                self._complete(ip, action["id"])

    def _complete(self, ip: str, action_id: int) -> None:
        # The assignment was recorded when asked; nothing routes these addresses.
        with self.store.transaction() as txn:
            doc = txn.get("reserved_ip", ip)
            if doc is not None:
                doc["locked"] = False
                txn.put("reserved_ip", ip, doc)
            finish_action(txn, action_id, True)

    @staticmethod
    def _droplet(txn: Txn, droplet_id: Any) -> dict[str, Any]:
        if not (isinstance(droplet_id, int) and not isinstance(droplet_id, bool)) and not (
            isinstance(droplet_id, str) and droplet_id.isdigit()
        ):
            raise unprocessable("droplet_id must be a Droplet id")
        droplet = txn.get("droplet", int(droplet_id))
        if droplet is None:
            raise unprocessable(f"droplet_id: no Droplet with id {droplet_id}")
        return droplet

    @staticmethod
    def _unassign_elsewhere(txn: Txn, droplet_id: int) -> None:
        # A Droplet has at most one reserved IP.
        for other in txn.list("reserved_ip"):
            if other["droplet_id"] == droplet_id:
                other["droplet_id"] = None
                txn.put("reserved_ip", other["ip"], other)

    def _json(self, doc: dict[str, Any]) -> dict[str, Any]:
        droplet = self.render_droplet(doc["droplet_id"]) if doc["droplet_id"] is not None else None
        return {
            "ip": doc["ip"],
            "region": catalogue.region(doc["region_slug"]),
            "droplet": droplet,
            "locked": doc["locked"],
            "project_id": PROJECT_ID,
        }
