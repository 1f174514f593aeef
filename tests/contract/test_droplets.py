"""Droplets, their actions and snapshots, against the spec and DigitalOcean's semantics."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

# These tests are about the answers' shapes: without the spec they would check nothing of it.
pytestmark = pytest.mark.usefixtures("do_spec")

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl contract"


def test_create_droplet_is_new_until_booted_then_active(client: Any) -> None:
    key = client.call("POST", "account/keys", json={"name": "c", "public_key": PUBKEY}, status=201).json()["ssh_key"]
    droplet, action_id = client.create_droplet("web-1", ssh_keys=[key["fingerprint"]], tags=["web"],
                                               user_data="#cloud-config\n", ipv6=True, monitoring=True)
    assert droplet["status"] == "new" and droplet["locked"] is True
    assert droplet["networks"]["v4"] == []
    action = client.get(f"actions/{action_id}")["action"]
    assert action["type"] == "create" and action["resource_id"] == droplet["id"]
    assert client.wait_action(action_id)["status"] == "completed"
    got = client.get(f"droplets/{droplet['id']}")["droplet"]
    assert got["status"] == "active" and got["locked"] is False
    public = [n for n in got["networks"]["v4"] if n["type"] == "public"]
    assert len(public) == 1 and public[0]["ip_address"]
    assert got["tags"] == ["web"] and "monitoring" in got["features"]
    assert client.get(f"droplets/{droplet['id']}/actions/{action_id}")["action"]["status"] == "completed"
    assert any(a["id"] == action_id for a in client.get(f"droplets/{droplet['id']}/actions")["actions"])
    client.call("DELETE", f"droplets/{droplet['id']}", status=204)
    client.call("DELETE", f"account/keys/{key['id']}", status=204)


def test_list_droplets_paginates_with_absolute_links(client: Any) -> None:
    ids = [client.create_droplet(f"page-{i}", tags=["paging"])[0]["id"] for i in range(5)]
    first = client.get("droplets", params={"tag_name": "paging", "per_page": 2})
    assert [d["id"] for d in first["droplets"]] == ids[:2]
    assert first["meta"]["total"] == 5
    pages = first["links"]["pages"]
    assert set(pages) == {"next", "last"}
    assert pages["next"].startswith(client.url + "droplets?")
    assert parse_qs(urlsplit(pages["last"]).query) == {"tag_name": ["paging"], "page": ["3"], "per_page": ["2"]}
    second = client.get(pages["next"])
    assert [d["id"] for d in second["droplets"]] == ids[2:4]
    assert set(second["links"]["pages"]) == {"first", "prev", "next", "last"}
    third = client.get(second["links"]["pages"]["next"])
    assert [d["id"] for d in third["droplets"]] == ids[4:]
    assert set(third["links"]["pages"]) == {"first", "prev"}
    assert client.get("droplets", params={"tag_name": "paging", "page": 4, "per_page": 2})["droplets"] == []
    client.call("DELETE", "droplets", params={"tag_name": "paging"}, status=204)
    assert client.get("droplets", params={"tag_name": "paging"})["meta"]["total"] == 0
    for droplet_id in ids:
        client.call("GET", f"droplets/{droplet_id}", status=404)


def test_pagination_rejects_bad_page_numbers(client: Any) -> None:
    resp = client.call("GET", "droplets", params={"per_page": "lots"}, status=422)
    assert "per_page" in resp.json()["message"]
    assert client.get("droplets", params={"per_page": 500})["meta"]["total"] >= 0


def test_power_actions_change_status_and_lock_the_droplet(client: Any) -> None:
    droplet = client.active_droplet("power-1")
    did = droplet["id"]
    action = client.call("POST", f"droplets/{did}/actions", json={"type": "power_off"}, status=201).json()["action"]
    assert action["status"] == "in-progress" and action["type"] == "power_off"
    assert client.wait_action(action["id"])["status"] == "completed"
    assert client.get(f"droplets/{did}")["droplet"]["status"] == "off"
    for type_, status in (("power_on", "active"), ("reboot", "active"), ("shutdown", "off"), ("power_on", "active")):
        action = client.call("POST", f"droplets/{did}/actions", json={"type": type_}, status=201).json()["action"]
        assert client.wait_action(action["id"])["status"] == "completed", type_
        got = client.get(f"droplets/{did}")["droplet"]
        assert (got["status"], got["locked"]) == (status, False), type_
    client.call("DELETE", f"droplets/{did}", status=204)


def test_a_droplet_with_a_pending_event_refuses_actions(client: Any) -> None:
    client.admin("POST", {"droplet_create": "never_active"})  # its create action never ends
    droplet, _ = client.create_droplet("busy")
    assert client.get(f"droplets/{droplet['id']}")["droplet"]["locked"] is True
    busy = client.call("POST", f"droplets/{droplet['id']}/actions", json={"type": "power_off"}, status=422).json()
    assert busy["id"] == "unprocessable_entity" and "pending" in busy["message"]
    client.call("DELETE", f"droplets/{droplet['id']}", status=204)


def test_snapshot_then_create_a_droplet_from_it(client: Any) -> None:
    source = client.active_droplet("snap-src")
    action = client.call("POST", f"droplets/{source['id']}/actions",
                         json={"type": "snapshot", "name": "snap-1"}, status=201).json()["action"]
    assert client.wait_action(action["id"])["status"] == "completed"
    listed = client.get(f"droplets/{source['id']}/snapshots")["snapshots"]
    assert [s["name"] for s in listed] == ["snap-1"]
    snap_id = listed[0]["id"]
    assert client.get(f"droplets/{source['id']}")["droplet"]["snapshot_ids"] == [snap_id]
    snap = client.get(f"snapshots/{snap_id}")["snapshot"]
    assert snap["resource_id"] == str(source["id"]) and snap["resource_type"] == "droplet"
    assert any(s["id"] == str(snap_id) for s in client.get("snapshots", params={"resource_type": "droplet"})["snapshots"])
    assert client.get("snapshots", params={"resource_type": "volume"})["snapshots"] == []

    copy = client.active_droplet("snap-copy", image=snap_id)
    assert copy["image"]["id"] == snap_id and copy["image"]["type"] == "snapshot"

    rebuild = client.call("POST", f"droplets/{copy['id']}/actions",
                          json={"type": "rebuild", "image": "debian-12-x64"}, status=201).json()["action"]
    assert client.wait_action(rebuild["id"])["status"] == "completed"
    assert client.get(f"droplets/{copy['id']}")["droplet"]["image"]["slug"] == "debian-12-x64"

    for did in (copy["id"], source["id"]):
        client.call("DELETE", f"droplets/{did}", status=204)
    client.call("DELETE", f"snapshots/{snap_id}", status=204)
    client.call("GET", f"snapshots/{snap_id}", status=404)


def test_multi_create_with_names(client: Any) -> None:
    data = client.call("POST", "droplets", json={"names": ["multi-a", "multi-b"], "region": "fra1",
                                                 "size": "s-1vcpu-512mb-10gb", "image": "debian-12-x64"},
                       status=202).json()
    assert [d["name"] for d in data["droplets"]] == ["multi-a", "multi-b"]
    assert len(data["links"]["actions"]) == 2
    for link in data["links"]["actions"]:
        assert client.wait_action(link["id"])["status"] == "completed"
    for droplet in data["droplets"]:
        client.call("DELETE", f"droplets/{droplet['id']}", status=204)


@pytest.mark.parametrize(("change", "field"), [
    ({"region": "mars1"}, "region"),
    ({"size": "s-64vcpu-1tb"}, "size"),
    ({"image": "ubuntu-24-04-x64"}, "image"),
    ({"image": 999999999}, "image"),
    ({"ssh_keys": ["00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"]}, "ssh_keys"),
    ({"name": "no spaces allowed"}, "name"),
    ({"tags": ["bad tag"]}, "tags"),
])
def test_create_droplet_rejects_bad_input_naming_the_field(client: Any, change: dict[str, Any], field: str) -> None:
    body = {"name": "bad", "region": "nyc3", "size": "s-1vcpu-1gb", "image": "debian-12-x64", **change}
    error = client.call("POST", "droplets", json=body, status=422).json()
    assert error["id"] == "unprocessable_entity" and field in error["message"]


def test_unknown_droplet_and_action_are_404(client: Any) -> None:
    for path in ("droplets/1", "droplets/abc", "actions/1", "droplets/1/actions", "snapshots/1",
                 "droplets/1/snapshots"):
        assert client.get(path, status=404)["id"] == "not_found"
    client.call("DELETE", "droplets/1", status=404)
    client.call("POST", "droplets/1/actions", json={"type": "reboot"}, status=404)


def test_unsupported_action_type_is_422(client: Any) -> None:
    droplet = client.active_droplet("odd-action")
    error = client.call("POST", f"droplets/{droplet['id']}/actions", json={"type": "resize"}, status=422).json()
    assert "type" in error["message"]
    client.call("DELETE", f"droplets/{droplet['id']}", status=204)


def test_actions_list_is_paginated(client: Any) -> None:
    data = client.get("actions", params={"per_page": 1})
    assert len(data["actions"]) <= 1 and data["meta"]["total"] >= len(data["actions"])


def test_snapshot_tags_and_the_images_listing(client: Any) -> None:
    """A snapshot is a private image: tagged through /v2/tags (resource_type image), listed by /v2/images
    (private=true, tag_name) with its tags, deleted through /v2/images; the tag counts it."""
    source = client.active_droplet("golden-src")
    action = client.call("POST", f"droplets/{source['id']}/actions",
                         json={"type": "snapshot", "name": "golden-1"}, status=201).json()["action"]
    assert client.wait_action(action["id"])["status"] == "completed"
    snap_id = client.get(f"droplets/{source['id']}/snapshots")["snapshots"][0]["id"]
    client.call("POST", "tags", json={"name": "relaunch-golden"}, status=201)
    client.call("POST", "tags/relaunch-golden/resources",
                json={"resources": [{"resource_id": str(snap_id), "resource_type": "image"}]}, status=204)
    client.call("POST", "tags/relaunch-golden/resources",
                json={"resources": [{"resource_id": "999999", "resource_type": "image"}]}, status=422)
    assert client.get(f"snapshots/{snap_id}")["snapshot"]["tags"] == ["relaunch-golden"]
    tag = client.get("tags/relaunch-golden")["tag"]["resources"]
    assert tag["images"]["count"] == 1 and tag["droplets"]["count"] == 0

    private = client.get("images", params={"private": "true"})["images"]
    assert [(i["id"], i["type"], i["public"], i["tags"]) for i in private] == [(snap_id, "snapshot", False, ["relaunch-golden"])]
    everything = client.get("images")["images"]
    assert {i["type"] for i in everything} == {"base", "snapshot"}
    assert [i["id"] for i in client.get("images", params={"tag_name": "relaunch-golden"})["images"]] == [snap_id]
    assert [i["slug"] for i in client.get("images", params={"type": "distribution"})["images"]] == ["debian-12-x64"]
    assert client.get(f"images/{snap_id}")["image"]["name"] == "golden-1"
    assert client.get("images/debian-12-x64")["image"]["public"] is True

    client.call("DELETE", "tags/relaunch-golden/resources",
                json={"resources": [{"resource_id": str(snap_id), "resource_type": "image"}]}, status=204)
    assert client.get(f"images/{snap_id}")["image"]["tags"] == []
    client.call("DELETE", "tags/relaunch-golden", status=204)
    client.call("DELETE", f"droplets/{source['id']}", status=204)
    client.call("DELETE", f"images/{snap_id}", status=204)
    client.call("GET", f"images/{snap_id}", status=404)
    assert client.get("images", params={"private": "true"})["images"] == []
