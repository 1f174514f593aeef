"""python-digitalocean, the library relaunch uses, works against the sandbox."""

from __future__ import annotations

from typing import Any

import digitalocean
import pytest


PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl library"


@pytest.fixture
def manager(client: Any, monkeypatch: pytest.MonkeyPatch) -> digitalocean.Manager:
    # The library's objects read only this variable (not a constructor argument).
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", client.url)
    return digitalocean.Manager(token=client.token)


def _wait(client: Any, action_id: int) -> None:
    assert client.wait_action(action_id)["status"] == "completed"


def test_library_droplet_snapshot_keys_and_domains(client: Any, manager: digitalocean.Manager) -> None:
    key = digitalocean.SSHKey(token=client.token, name="library", public_key=PUBKEY)
    key.create()
    key.load()  # create() keeps only the id
    assert key.fingerprint and [k.id for k in manager.get_all_sshkeys()].count(key.id) == 1

    droplet = digitalocean.Droplet(token=client.token, name="lib-1", region="nyc3", image="debian-12-x64",
                                   size_slug="s-1vcpu-1gb", ssh_keys=[key.fingerprint], tags=["lib"])
    droplet.create()
    _wait(client, droplet.action_ids[0])
    droplet.load()
    assert droplet.status == "active" and droplet.ip_address
    assert [d.id for d in manager.get_all_droplets(tag_name="lib")] == [droplet.id]

    result = droplet.take_snapshot("lib-snap", power_off=False)
    _wait(client, result["action"]["id"])
    snapshots = [s for s in manager.get_all_snapshots() if s.name == "lib-snap"]
    assert len(snapshots) == 1
    assert [s.name for s in manager.get_droplet_snapshots()].count("lib-snap") == 1

    power = droplet.power_off(return_dict=False)
    assert power.wait(update_every_seconds=0.2, repeat=600)
    droplet.load()
    assert droplet.status == "off"

    domain = digitalocean.Domain(token=client.token, name="lib.example", ip_address=droplet.ip_address)
    domain.create()
    record = domain.create_new_domain_record(type="A", name="www", data=droplet.ip_address, ttl=300)
    records = domain.get_records()
    www = [r for r in records if r.name == "www"]
    assert len(www) == 1 and www[0].data == droplet.ip_address
    www[0].data = "192.0.2.99"
    www[0].save()
    assert digitalocean.Record.get_object(client.token, "lib.example", record["domain_record"]["id"]).data == "192.0.2.99"
    www[0].destroy()
    domain.destroy()

    droplet.destroy()
    digitalocean.Snapshot.get_object(client.token, snapshots[0].id).destroy()
    key.destroy()
    assert manager.get_all_droplets(tag_name="lib") == []


def test_library_paginates_through_all_droplets(client: Any, manager: digitalocean.Manager) -> None:
    droplets = digitalocean.Droplet.create_multiple(token=client.token, names=["lib-p1", "lib-p2", "lib-p3"],
                                                    region="nyc3", image="debian-12-x64", size_slug="s-1vcpu-1gb",
                                                    tags=["libpage"])
    # The library always asks per_page=200; ask for small pages to make it follow links.
    found = manager.get_all_droplets(params={"per_page": 1}, tag_name="libpage")
    assert sorted(d.id for d in found) == sorted(d.id for d in droplets)
    floating = digitalocean.FloatingIP(token=client.token, region_slug="nyc3").reserve()
    assert floating.ip.startswith("192.0.2.")
    assert any(f.ip == floating.ip for f in manager.get_all_floating_ips())
    floating.destroy()
    for d in droplets:
        d.destroy()
