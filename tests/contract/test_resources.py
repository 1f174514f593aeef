"""SSH keys, domains and records, tags, reserved and floating IPs."""

from __future__ import annotations

from typing import Any

import pytest

# These tests are about the answers' shapes: without the spec they would check nothing of it.
pytestmark = pytest.mark.usefixtures("do_spec")

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl keys-test"
FINGERPRINT = "65:96:2d:fc:e8:d5:a9:11:64:0c:0f:ea:00:6e:5b:bd"


def test_ssh_keys_by_id_and_fingerprint(client: Any) -> None:
    key = client.call("POST", "account/keys", json={"name": "laptop", "public_key": PUBKEY}, status=201).json()["ssh_key"]
    assert key["fingerprint"] == FINGERPRINT
    assert client.get(f"account/keys/{key['id']}")["ssh_key"] == key
    assert client.get(f"account/keys/{FINGERPRINT}")["ssh_key"]["id"] == key["id"]
    assert any(k["id"] == key["id"] for k in client.get("account/keys")["ssh_keys"])
    dup = client.call("POST", "account/keys", json={"name": "again", "public_key": PUBKEY}, status=422).json()
    assert dup["id"] == "unprocessable_entity"
    bad = client.call("POST", "account/keys", json={"name": "x", "public_key": "ssh-rsa nope"}, status=422).json()
    assert "public_key" in bad["message"]
    renamed = client.call("PUT", f"account/keys/{key['id']}", json={"name": "desk"}, status=200).json()
    assert renamed["ssh_key"]["name"] == "desk"
    client.call("DELETE", f"account/keys/{FINGERPRINT}", status=204)
    client.get(f"account/keys/{key['id']}", status=404)


def test_domains_and_records(client: Any) -> None:
    created = client.call("POST", "domains", json={"name": "example.com", "ip_address": "192.0.2.10"}, status=201)
    assert created.json()["domain"]["name"] == "example.com"
    client.call("POST", "domains", json={"name": "example.com"}, status=422)
    assert "example.com" in client.get("domains/example.com")["domain"]["zone_file"]
    assert any(d["name"] == "example.com" for d in client.get("domains")["domains"])
    www = client.call("POST", "domains/example.com/records",
                      json={"type": "A", "name": "www", "data": "192.0.2.11", "ttl": 300}, status=201).json()["domain_record"]
    client.call("POST", "domains/example.com/records", json={"type": "MX", "name": "@", "data": "mail"}, status=422)
    client.call("POST", "domains/example.com/records", json={"type": "A", "name": "x", "data": "nope"}, status=422)
    a_records = client.get("domains/example.com/records", params={"type": "A"})["domain_records"]
    assert {r["name"] for r in a_records} == {"@", "www"}
    by_name = client.get("domains/example.com/records", params={"type": "A", "name": "www.example.com"})
    assert [r["id"] for r in by_name["domain_records"]] == [www["id"]]
    paged = client.get("domains/example.com/records", params={"per_page": 2})
    assert paged["meta"]["total"] == 6 and "next" in paged["links"]["pages"]
    patched = client.call("PATCH", f"domains/example.com/records/{www['id']}", json={"data": "192.0.2.12"},
                          status=200).json()["domain_record"]
    assert (patched["data"], patched["ttl"]) == ("192.0.2.12", 300)
    put = client.call("PUT", f"domains/example.com/records/{www['id']}", json={"ttl": 60}, status=200).json()
    assert put["domain_record"]["ttl"] == 60
    assert client.get(f"domains/example.com/records/{www['id']}")["domain_record"]["data"] == "192.0.2.12"
    client.call("DELETE", f"domains/example.com/records/{www['id']}", status=204)
    client.get(f"domains/example.com/records/{www['id']}", status=404)
    client.call("DELETE", "domains/example.com", status=204)
    client.get("domains/example.com", status=404)
    client.get("domains/example.com/records", status=404)


def test_tags_follow_droplets(client: Any) -> None:
    droplet, _ = client.create_droplet("tagged", tags=["blue"])
    assert client.get("tags/blue")["tag"]["resources"]["droplets"]["count"] == 1
    client.call("POST", "tags", json={"name": "green"}, status=201)
    client.call("POST", "tags", json={"name": "not ok"}, status=422)
    client.call("POST", "tags/green/resources",
                json={"resources": [{"resource_id": str(droplet["id"]), "resource_type": "droplet"}]}, status=204)
    assert client.get(f"droplets/{droplet['id']}")["droplet"]["tags"] == ["blue", "green"]
    assert [d["id"] for d in client.get("droplets", params={"tag_name": "green"})["droplets"]] == [droplet["id"]]
    client.call("DELETE", "tags/blue/resources",
                json={"resources": [{"resource_id": str(droplet["id"]), "resource_type": "droplet"}]}, status=204)
    assert client.get(f"droplets/{droplet['id']}")["droplet"]["tags"] == ["green"]
    client.call("DELETE", "tags/green", status=204)
    assert client.get(f"droplets/{droplet['id']}")["droplet"]["tags"] == []
    client.get("tags/green", status=404)
    assert {t["name"] for t in client.get("tags")["tags"]} >= {"blue"}
    client.call("DELETE", "tags/blue", status=204)
    client.call("DELETE", f"droplets/{droplet['id']}", status=204)


def test_reserved_ips_assign_and_unassign(client: Any) -> None:
    droplet = client.active_droplet("rip")
    created = client.call("POST", "reserved_ips", json={"droplet_id": droplet["id"]}, status=202).json()
    ip = created["reserved_ip"]["ip"]
    assert ip.startswith("192.0.2.") and created["reserved_ip"]["droplet"]["id"] == droplet["id"]
    assign = created["links"]["actions"][0]["id"]
    assert client.wait_action(assign)["status"] == "completed"
    assert client.get(f"reserved_ips/{ip}/actions/{assign}")["action"]["type"] == "assign_ip"
    action = client.call("POST", f"reserved_ips/{ip}/actions", json={"type": "unassign"}, status=201).json()["action"]
    assert client.wait_action(action["id"])["status"] == "completed"
    assert client.get(f"reserved_ips/{ip}")["reserved_ip"]["droplet"] is None
    assert len(client.get(f"reserved_ips/{ip}/actions")["actions"]) == 2
    action = client.call("POST", f"reserved_ips/{ip}/actions", json={"type": "assign", "droplet_id": droplet["id"]},
                         status=201).json()["action"]
    client.wait_action(action["id"])
    # The old floating_ips paths see the same addresses.
    assert client.get(f"floating_ips/{ip}")["floating_ip"]["droplet"]["id"] == droplet["id"]
    assert any(f["ip"] == ip for f in client.get("floating_ips")["floating_ips"])
    client.call("POST", "reserved_ips", json={}, status=422)
    client.call("POST", "reserved_ips", json={"region": "mars1"}, status=422)
    client.get("reserved_ips/192.0.2.254", status=404)
    client.call("DELETE", f"droplets/{droplet['id']}", status=204)
    assert client.get(f"reserved_ips/{ip}")["reserved_ip"]["droplet"] is None
    client.call("DELETE", f"reserved_ips/{ip}", status=204)


def test_floating_ip_in_a_region(client: Any) -> None:
    created = client.call("POST", "floating_ips", json={"region": "ams3"}, status=202).json()["floating_ip"]
    assert created["droplet"] is None and created["region"]["slug"] == "ams3"
    assert client.get("reserved_ips", params={"per_page": 1})["meta"]["total"] >= 1
    client.call("DELETE", f"floating_ips/{created['ip']}", status=204)


def test_catalogue_lists(client: Any) -> None:
    assert {r["slug"] for r in client.get("regions")["regions"]} >= {"nyc1", "fra1", "syd1"}
    assert len(client.get("sizes")["sizes"]) == 6
    assert client.get("account")["account"]["status"] == "active"
