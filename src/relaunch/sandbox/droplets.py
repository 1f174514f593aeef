"""Droplets, their actions and snapshots: the simulator's state machine over a Backend.

A request handler only changes the stored state and starts a worker; the worker makes
the blocking backend call and records the outcome. A Droplet is ``new`` with an
``in-progress`` create action until its machine has booted, then ``active`` with its
address in ``networks.v4``; it is ``locked`` while an action runs. Every change is
persisted, so ``resume`` (run when a simulator starts) can finish or fail the work a dead
simulator left behind.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from relaunch.sandbox import catalogue
from relaunch.sandbox.backend import BASE_IMAGE_SLUG, Backend, Booted
from relaunch.sandbox.faults import Faults
from relaunch.sandbox.model import (
    ApiError,
    Workers,
    now_iso,
    not_found,
    owner_alive,
    public,
    unprocessable,
)
from relaunch.sandbox.store import Store, Txn

log = logging.getLogger(__name__)

#: Droplet action types the sandbox performs (others are refused with 422).
DROPLET_ACTIONS = ("power_off", "power_on", "shutdown", "reboot", "power_cycle", "snapshot", "rebuild", "rename")

_HOSTNAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,253}[a-zA-Z0-9])?$")
TAG_NAME = re.compile(r"^[a-zA-Z0-9_\-:]{1,255}$")
MAX_USER_DATA = 64 * 1024
MAX_MULTI_CREATE = 10


def vpc_uuid(region_slug: str) -> str:
    """Return the stable id of a region's default VPC."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"relaunch-sandbox/vpc/{region_slug}"))


def snapshot_image(snap: dict[str, Any]) -> dict[str, Any]:
    """Return the spec's ``image`` object for a stored snapshot."""
    return {
        "id": snap["id"],
        "name": snap["name"],
        "type": "snapshot",
        "distribution": "Debian",
        "slug": None,
        "public": False,
        "regions": snap["regions"],
        "created_at": snap["created_at"],
        "min_disk_size": snap["min_disk_size"],
        "size_gigabytes": snap["size_gigabytes"],
        "description": "",
        "tags": snap.get("tags", []),
        "status": "available",
    }


def new_action(
    txn: Txn, owner: dict[str, Any], type_: str, resource_id: int | None, resource_type: str,
    region_slug: str | None, params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store and return a new ``in-progress`` action owned by ``owner``."""
    action = {
        "id": txn.new_id(),
        "status": "in-progress",
        "type": type_,
        "started_at": now_iso(),
        "completed_at": None,
        "resource_id": resource_id,
        "resource_type": resource_type,
        "region": catalogue.region(region_slug) if region_slug else None,
        "region_slug": region_slug,
        "_": {"owner": owner, "params": params or {}},
    }
    txn.insert("action", action["id"], action)
    return action


def finish_action(txn: Txn, action_id: int, ok: bool) -> None:
    """Mark an action ``completed`` (ok) or ``errored``, now."""
    action = txn.get("action", action_id)
    if action is not None:
        action["status"] = "completed" if ok else "errored"
        action["completed_at"] = now_iso()
        txn.put("action", action_id, action)


def _networks(booted: Booted, ipv6: bool, droplet_id: int) -> dict[str, Any]:
    v4 = [{"ip_address": booted.ipv4, "netmask": booted.netmask, "gateway": booted.gateway, "type": "public"}]
    v6 = []
    if ipv6 and booted.ipv6:
        # The Droplet's own address on the sandbox network's unique local /64 (none when the
        # network has no IPv6: then the Droplet has none, as a Droplet created without ipv6).
        v6 = [{"ip_address": booted.ipv6, "netmask": 64, "gateway": booted.gateway6 or "", "type": "public"}]
    return {"v4": v4, "v6": v6}


class Droplets:
    """Droplets, Droplet actions and snapshots of one simulator instance."""

    def __init__(self, store: Store, backend: Backend, faults: Faults, workers: Workers, owner: dict[str, Any]) -> None:
        self.store = store
        self.backend = backend
        self.faults = faults
        self.workers = workers
        self.owner = owner

    # ----- reading -----

    def get(self, droplet_id: str | int) -> dict[str, Any]:
        """Return a Droplet's public JSON. Raise ApiError 404 if there is none."""
        doc = self.store.get("droplet", _int_id(droplet_id))
        if doc is None:
            raise not_found()
        return public(doc)

    def list(self, tag_name: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """Return every Droplet's public JSON, optionally only those with a tag or a name."""
        docs = self.store.list("droplet")
        if tag_name is not None:
            docs = [d for d in docs if tag_name in d["tags"]]
        if name is not None:
            docs = [d for d in docs if d["name"] == name]
        return [public(d) for d in docs]

    # ----- create -----

    def create(self, body: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Create one Droplet (``name``) or several (``names``); return (droplet, action) JSON pairs.

        Each gets an in-progress create action and a worker that boots its machine.
        Raise ApiError 422 naming the field for bad input.
        """
        if not isinstance(body, dict):
            raise unprocessable("the request body must be a JSON object")
        if "names" in body and body["names"] is not None:
            names = body["names"]
            if not isinstance(names, list) or not names or len(names) > MAX_MULTI_CREATE:
                raise unprocessable(f"names must be a list of 1 to {MAX_MULTI_CREATE} names")
        elif "name" in body:
            names = [body["name"]]
        else:
            raise unprocessable("name is required")
        for name in names:
            if not isinstance(name, str) or not _HOSTNAME.match(name):
                raise unprocessable(f"name {name!r} is invalid: only letters, digits, '.' and '-' are allowed")
        region = body.get("region") or "nyc3"
        if region not in catalogue.REGIONS:
            raise unprocessable(f"region {region!r} is not available")
        size = body.get("size")
        if size not in catalogue.SIZES:
            raise unprocessable(f"size {size!r} is not available" if size else "size is required")
        user_data = body.get("user_data")
        if user_data is not None and (not isinstance(user_data, str) or len(user_data.encode()) > MAX_USER_DATA):
            raise unprocessable("user_data must be a string of at most 64 KiB")
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and TAG_NAME.match(t) for t in tags):
            raise unprocessable("tags must be a list of tag names (letters, digits, '_', '-', ':')")
        ssh_keys = body.get("ssh_keys") or []
        if not isinstance(ssh_keys, list):
            raise unprocessable("ssh_keys must be a list of key ids or fingerprints")
        flags = {}
        for flag in ("ipv6", "monitoring", "backups", "private_networking", "with_droplet_agent"):
            value = body.get(flag)
            if value is not None and not isinstance(value, bool):
                raise unprocessable(f"{flag} must be a boolean")
            flags[flag] = bool(value)

        created = []
        with self.store.transaction() as txn:
            image, image_ref = self._resolve_image(txn, body.get("image"))
            keys = [self._resolve_key(txn, k) for k in ssh_keys]
            for tag in tags:
                if txn.get("tag", tag) is None:
                    txn.insert("tag", tag, {"name": tag})
            for name in names:
                fault = self.faults.take_create()
                droplet_id = txn.new_id()
                size_json = catalogue.size(size)
                features = [f for f in ("backups", "ipv6", "monitoring") if flags[f]] + ["droplet_agent"]
                doc = {
                    "id": droplet_id,
                    "name": name,
                    "memory": size_json["memory"],
                    "vcpus": size_json["vcpus"],
                    "disk": size_json["disk"],
                    "disk_info": size_json["disk_info"],
                    "locked": True,
                    "status": "new",
                    "kernel": None,
                    "created_at": now_iso(),
                    "features": features,
                    "backup_ids": [],
                    "next_backup_window": None,
                    "snapshot_ids": [],
                    "image": image,
                    "volume_ids": [],
                    "size": size_json,
                    "size_slug": size,
                    "networks": {"v4": [], "v6": []},
                    "region": catalogue.region(region),
                    "tags": list(dict.fromkeys(tags)),
                    "vpc_uuid": vpc_uuid(region),
                    "_": {
                        "image_ref": image_ref,
                        "user_data": user_data,
                        "keys": keys,
                        "ipv6": flags["ipv6"],
                        "stuck": fault == "never_active",
                    },
                }
                txn.insert("droplet", droplet_id, doc)
                action = new_action(txn, self.owner, "create", droplet_id, "droplet", region, {"fault": fault})
                created.append((doc, action, fault))
        for doc, action, fault in created:
            if fault == "never_active":
                log.info("droplet %s will never become active (fault)", doc["id"])
            else:
                self.workers.spawn(f"create-{doc['id']}", self._run_create, doc["id"], action["id"], fault)
        return [(public(d), public(a)) for d, a, _ in created]

    def _resolve_image(self, txn: Txn, image: Any) -> tuple[dict[str, Any], str]:
        if image == BASE_IMAGE_SLUG or image == catalogue.BASE_IMAGE_ID or image == str(catalogue.BASE_IMAGE_ID):
            return catalogue.base_image(), BASE_IMAGE_SLUG
        if isinstance(image, int) and not isinstance(image, bool) or (isinstance(image, str) and image.isdigit()):
            snap = txn.get("snapshot", int(image))
            if snap is not None:
                return snapshot_image(snap), f"snapshot:{snap['id']}"
        if image is None or image == "":
            raise unprocessable("image is required")
        raise unprocessable(f"image {image!r} is not available: use {BASE_IMAGE_SLUG!r} or a snapshot id")

    @staticmethod
    def _resolve_key(txn: Txn, ref: Any) -> str:
        if isinstance(ref, int) and not isinstance(ref, bool) or (isinstance(ref, str) and ref.isdigit()):
            key = txn.get("key", int(ref))
        elif isinstance(ref, str):
            key = next((k for k in txn.list("key") if k["fingerprint"] == ref), None)
        else:
            key = None
        if key is None:
            raise unprocessable(f"ssh_keys: no key with id or fingerprint {ref!r}")
        return key["public_key"]

    def _run_create(self, droplet_id: int, action_id: int, fault: str | None) -> None:
        doc = self.store.get("droplet", droplet_id)
        if doc is None:
            self._finish(action_id, False)
            return
        if fault == "create_error":
            log.info("droplet %s create errors (fault)", droplet_id)
            self._unlock(droplet_id)
            self._finish(action_id, False)
            return
        private = doc["_"]
        try:
            booted = self.backend.create_droplet(
                droplet_id, doc["name"], private["image_ref"], private["user_data"], private["keys"]
            )
        except Exception as exc:
            log.error("droplet %s did not boot: %s", droplet_id, exc)
            self._unlock(droplet_id)
            self._finish(action_id, False)
            return

        def activate(d: dict[str, Any]) -> dict[str, Any]:
            d["status"] = "active"
            d["locked"] = False
            d["networks"] = _networks(booted, d["_"]["ipv6"], droplet_id)
            return d

        if self.store.update("droplet", droplet_id, activate) is None:
            # Deleted while it booted: its destroy may have run before the machine existed.
            log.info("droplet %s was deleted while booting; removing its machine", droplet_id)
            self.backend.destroy_droplet(droplet_id)
            self._finish(action_id, False)
            return
        self._finish(action_id, True)

    # ----- delete -----

    def delete(self, droplet_id: str | int) -> None:
        """Remove a Droplet from the cloud now and its machine in the background. 404 if none."""
        did = _int_id(droplet_id)
        with self.store.transaction() as txn:
            if not txn.delete("droplet", did):
                raise not_found()
            self._forget(txn, did)
        self.workers.spawn(f"destroy-{did}", self._run_destroy, did)

    def delete_by_tag(self, tag_name: str) -> None:
        """Delete every Droplet carrying ``tag_name``."""
        ids = []
        with self.store.transaction() as txn:
            for doc in txn.list("droplet"):
                if tag_name in doc["tags"]:
                    txn.delete("droplet", doc["id"])
                    self._forget(txn, doc["id"])
                    ids.append(doc["id"])
        for did in ids:
            self.workers.spawn(f"destroy-{did}", self._run_destroy, did)

    def _forget(self, txn: Txn, droplet_id: int) -> None:
        txn.put("destroy", droplet_id, {"droplet_id": droplet_id, "owner": self.owner})
        for ip in txn.list("reserved_ip"):
            if ip.get("droplet_id") == droplet_id:
                ip["droplet_id"] = None
                txn.put("reserved_ip", ip["ip"], ip)

    def _run_destroy(self, droplet_id: int) -> None:
        self.backend.destroy_droplet(droplet_id)
        with self.store.transaction() as txn:
            txn.delete("destroy", droplet_id)

    # ----- actions -----

    def post_action(self, droplet_id: str | int, body: Any) -> dict[str, Any]:
        """Start a Droplet action; return the action's public JSON.

        Raise ApiError 404 for an unknown Droplet, 422 for an unknown type, bad
        parameters, or a Droplet that is locked by another action.
        """
        did = _int_id(droplet_id)
        if not isinstance(body, dict):
            raise unprocessable("the request body must be a JSON object")
        type_ = body.get("type")
        if type_ not in DROPLET_ACTIONS:
            raise unprocessable(f"type {type_!r} is not a supported action: {', '.join(DROPLET_ACTIONS)}")
        with self.store.transaction() as txn:
            doc = txn.get("droplet", did)
            if doc is None:
                raise not_found()
            if doc["locked"] or doc["status"] == "new":
                raise unprocessable("Droplet already has a pending event.")
            params: dict[str, Any] = {}
            if type_ == "snapshot":
                name = body.get("name") or f"{doc['name']}-{now_iso()}"
                if not isinstance(name, str):
                    raise unprocessable("name must be a string")
                params = {"name": name, "snapshot_id": txn.new_id()}
            elif type_ == "rebuild":
                image, image_ref = self._resolve_image(txn, body.get("image"))
                params = {"image": image, "image_ref": image_ref}
            elif type_ == "rename":
                name = body.get("name")
                if not isinstance(name, str) or not _HOSTNAME.match(name):
                    raise unprocessable("name is required and must be a valid hostname")
                params = {"name": name}
            doc["locked"] = True
            txn.put("droplet", did, doc)
            action = new_action(txn, self.owner, type_, did, "droplet", doc["region"]["slug"], params)
        self.workers.spawn(f"{type_}-{did}", self._run_action, did, action["id"], type_, params)
        return public(action)

    def _run_action(self, droplet_id: int, action_id: int, type_: str, params: dict[str, Any]) -> None:
        try:
            change = self._perform(droplet_id, type_, params)
        except Exception as exc:
            log.error("droplet %s %s failed: %s", droplet_id, type_, exc)
            self._unlock(droplet_id)
            self._finish(action_id, False)
            return

        def apply(d: dict[str, Any]) -> dict[str, Any]:
            d.update(change)
            d["locked"] = False
            return d

        self.store.update("droplet", droplet_id, apply)
        self._finish(action_id, True)

    def _perform(self, droplet_id: int, type_: str, params: dict[str, Any]) -> dict[str, Any]:
        """Do the backend work of an action; return the fields of the Droplet that change."""
        doc = self.store.get("droplet", droplet_id) or {}
        ipv6 = doc.get("_", {}).get("ipv6", False)
        if type_ == "power_off":
            self.backend.power_off(droplet_id)
            return {"status": "off"}
        if type_ == "shutdown":
            self.backend.shutdown(droplet_id)
            return {"status": "off"}
        if type_ == "power_on":
            return {"status": "active", "networks": _networks(self.backend.power_on(droplet_id), ipv6, droplet_id)}
        if type_ in ("reboot", "power_cycle"):
            return {"status": "active", "networks": _networks(self.backend.reboot(droplet_id), ipv6, droplet_id)}
        if type_ == "rename":
            return {"name": params["name"]}
        if type_ == "rebuild":
            booted = self.backend.rebuild(droplet_id, params["image_ref"])
            private = dict(doc.get("_", {}), image_ref=params["image_ref"])
            return {"status": "active", "image": params["image"], "_": private,
                    "networks": _networks(booted, ipv6, droplet_id)}
        if type_ == "snapshot":
            snap_id = params["snapshot_id"]
            size_bytes = self.backend.snapshot(droplet_id, snap_id)
            snap = {
                "id": snap_id,
                "name": params["name"],
                "created_at": now_iso(),
                "regions": [doc["region"]["slug"]],
                "min_disk_size": doc["disk"],
                "size_gigabytes": round(max(size_bytes, 0) / 1e9, 2),
                "resource_id": droplet_id,
                "resource_type": "droplet",
                "tags": [],
            }
            with self.store.transaction() as txn:
                txn.insert("snapshot", snap_id, snap)
            return {"snapshot_ids": doc.get("snapshot_ids", []) + [snap_id]}
        raise ValueError(f"unsupported action {type_}")

    def _unlock(self, droplet_id: int) -> None:
        self.store.update("droplet", droplet_id, lambda d: {**d, "locked": False})

    def _finish(self, action_id: int, ok: bool) -> None:
        with self.store.transaction() as txn:
            finish_action(txn, action_id, ok)

    # ----- snapshots -----

    def snapshots(self, resource_type: str | None = None) -> list[dict[str, Any]]:
        """Return every snapshot as ``/v2/snapshots`` shows it (ids as strings)."""
        if resource_type not in (None, "droplet", "volume"):
            raise unprocessable("resource_type must be 'droplet' or 'volume'")
        if resource_type == "volume":
            return []
        return [_snapshot_json(s) for s in self.store.list("snapshot")]

    def snapshot(self, snapshot_id: str) -> dict[str, Any]:
        """Return one snapshot as ``/v2/snapshots/{id}`` shows it. 404 if none."""
        snap = self.store.get("snapshot", _int_id(snapshot_id))
        if snap is None:
            raise not_found()
        return _snapshot_json(snap)

    def droplet_snapshots(self, droplet_id: str | int) -> list[dict[str, Any]]:
        """Return a Droplet's snapshots as ``/v2/droplets/{id}/snapshots`` shows them."""
        doc = self.store.get("droplet", _int_id(droplet_id))
        if doc is None:
            raise not_found()
        snaps = [self.store.get("snapshot", s) for s in doc["snapshot_ids"]]
        return [
            {k: s[k] for k in ("id", "name", "created_at", "regions", "min_disk_size", "size_gigabytes")}
            | {"type": "snapshot"}
            for s in snaps
            if s is not None
        ]

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Remove a snapshot now and its image in the background. 404 if none."""
        sid = _int_id(snapshot_id)
        with self.store.transaction() as txn:
            snap = txn.get("snapshot", sid)
            if snap is None:
                raise not_found()
            txn.delete("snapshot", sid)
            txn.put("snapshot_delete", sid, {"snapshot_id": sid, "owner": self.owner})
            droplet = txn.get("droplet", snap["resource_id"])
            if droplet is not None and sid in droplet["snapshot_ids"]:
                droplet["snapshot_ids"].remove(sid)
                txn.put("droplet", droplet["id"], droplet)
        self.workers.spawn(f"delete-snapshot-{sid}", self._run_delete_snapshot, sid)

    def _run_delete_snapshot(self, snapshot_id: int) -> None:
        self.backend.delete_snapshot(snapshot_id)
        with self.store.transaction() as txn:
            txn.delete("snapshot_delete", snapshot_id)

    # ----- images (the base image and the snapshots, as /v2/images shows them) -----

    def images(self, type_: str | None = None, private: str | None = None, tag_name: str | None = None) -> list[dict[str, Any]]:
        """Return ``/v2/images``: the base image (a distribution) and every snapshot (private), filtered as asked.

        Raise ApiError 422 for a ``type`` other than distribution/application or a ``private`` that is not a boolean.
        """
        if type_ not in (None, "distribution", "application"):
            raise unprocessable("type must be 'distribution' or 'application'")
        if private not in (None, "true", "false"):
            raise unprocessable("private must be true or false")
        snaps = [snapshot_image(s) for s in self.store.list("snapshot")]
        out = [] if private == "true" else [catalogue.base_image()]
        if type_ is None:
            out += snaps
        elif type_ == "application":
            out = []
        if tag_name is not None:
            out = [i for i in out if tag_name in i["tags"]]
        return out

    def image(self, image_id: str) -> dict[str, Any]:
        """Return one image by id or slug. 404 if none."""
        if image_id in (BASE_IMAGE_SLUG, str(catalogue.BASE_IMAGE_ID)):
            return catalogue.base_image()
        snap = self.store.get("snapshot", _int_id(image_id))
        if snap is None:
            raise not_found()
        return snapshot_image(snap)

    def delete_image(self, image_id: str) -> None:
        """Delete a private image (a snapshot). 404 if none, 422 for the public base image."""
        if image_id in (BASE_IMAGE_SLUG, str(catalogue.BASE_IMAGE_ID)):
            raise unprocessable("a public image cannot be deleted")
        self.delete_snapshot(image_id)

    # ----- recovery -----

    def resume(self) -> None:
        """Take over the work of simulators that died: re-run or settle it (see module doc)."""
        for pending in self.store.list("destroy"):
            if not owner_alive(pending.get("owner")):
                self.workers.spawn(f"destroy-{pending['droplet_id']}", self._run_destroy, pending["droplet_id"])
        for pending in self.store.list("snapshot_delete"):
            if not owner_alive(pending.get("owner")):
                sid = pending["snapshot_id"]
                self.workers.spawn(f"delete-snapshot-{sid}", self._run_delete_snapshot, sid)
        for action in self.store.list("action"):
            if action["status"] != "in-progress" or action["resource_type"] != "droplet":
                continue
            if owner_alive(action["_"].get("owner")):
                continue
            self._adopt(action)

    def _adopt(self, action: dict[str, Any]) -> None:
        def take(a: dict[str, Any]) -> dict[str, Any]:
            a["_"]["owner"] = self.owner
            return a

        self.store.update("action", action["id"], take)
        did, type_, params = action["resource_id"], action["type"], action["_"]["params"]
        doc = self.store.get("droplet", did)
        if doc is None:
            self._finish(action["id"], False)
            return
        log.info("resuming %s action %s of droplet %s", type_, action["id"], did)
        if type_ == "create":
            if doc["_"].get("stuck"):
                return  # the never_active fault: it stays new for good
            self.workers.spawn(f"recreate-{did}", self._rerun_create, did, action["id"])
        elif type_ == "snapshot":
            # Half-made snapshot: drop whatever image exists, fail the action.
            self.workers.spawn(f"abort-snapshot-{did}", self._abort_snapshot, did, action["id"], params)
        elif type_ in ("power_on", "reboot", "power_cycle"):
            self.workers.spawn(f"resume-{type_}-{did}", self._resume_boot, did, action["id"], type_, params)
        else:
            self.workers.spawn(f"{type_}-{did}", self._run_action, did, action["id"], type_, params)

    def _rerun_create(self, droplet_id: int, action_id: int) -> None:
        # A half-created machine may exist: remove it and create it afresh (cloud-init
        # must run on a clean first boot).
        if self.backend.exists(droplet_id):
            self.backend.destroy_droplet(droplet_id)
        self._run_create(droplet_id, action_id, None)

    def _abort_snapshot(self, droplet_id: int, action_id: int, params: dict[str, Any]) -> None:
        if self.store.get("snapshot", params["snapshot_id"]) is None:
            self.backend.delete_snapshot(params["snapshot_id"])
            self._unlock(droplet_id)
            self._finish(action_id, False)
        else:  # it was recorded; only the bookkeeping after it was lost
            self._unlock(droplet_id)
            self._finish(action_id, True)

    def _resume_boot(self, droplet_id: int, action_id: int, type_: str, params: dict[str, Any]) -> None:
        if self.backend.is_running(droplet_id):
            # It booted; its address does not change, so the stored networks stand.
            self.store.update("droplet", droplet_id, lambda d: {**d, "status": "active", "locked": False})
            self._finish(action_id, True)
        else:
            self._run_action(droplet_id, action_id, "power_on", params)


def _snapshot_json(snap: dict[str, Any]) -> dict[str, Any]:
    out = {k: snap[k] for k in ("name", "created_at", "regions", "min_disk_size", "size_gigabytes", "resource_type", "tags")}
    return {"id": str(snap["id"]), **out, "resource_id": str(snap["resource_id"])}


def _int_id(value: str | int) -> int:
    """Return a path id as an int; an id that is not a number is not found (404)."""
    if isinstance(value, int):
        return value
    if not value.isdigit():
        raise not_found()
    return int(value)


__all__ = ["ApiError", "Droplets", "DROPLET_ACTIONS", "new_action", "finish_action", "vpc_uuid"]
