"""The cloud survives a restart of its API, and a new API finishes what a dead one left."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from relaunch.sandbox.store import Store


def test_state_survives_a_restart(tmp_path: Path, fresh_server: Callable[..., Any]) -> None:
    first = fresh_server(tmp_path / "cloud")
    droplet = first.active_droplet("keeper")
    first.call("POST", "domains", json={"name": "keep.example"}, status=201)
    first.handle.close()
    second = fresh_server(tmp_path / "cloud")
    again = second.get(f"droplets/{droplet['id']}")["droplet"]
    assert again["status"] == "active" and again["networks"] == droplet["networks"]
    assert second.get("domains/keep.example")["domain"]["name"] == "keep.example"


def test_two_servers_on_one_state_see_the_same_cloud(tmp_path: Path, fresh_server: Callable[..., Any]) -> None:
    a = fresh_server(tmp_path / "cloud")
    b = fresh_server(tmp_path / "cloud")
    created = a.call("POST", "tags", json={"name": "shared"}, status=201).json()["tag"]
    assert b.get("tags/shared")["tag"] == created


def test_a_create_left_in_progress_by_a_dead_api_is_redone(tmp_path: Path, fresh_server: Callable[..., Any]) -> None:
    first = fresh_server(tmp_path / "cloud")
    droplet, action_id = first.create_droplet("orphan")
    first.wait_action(action_id)
    first.handle.close()
    # Make it look as if the API died while the machine was booting.
    store = Store(tmp_path / "cloud")
    gone = {"pid": 1 << 22, "instance": "dead"}
    store.update("droplet", droplet["id"], lambda d: {**d, "status": "new", "locked": True,
                                                       "networks": {"v4": [], "v6": []}})
    store.update("action", action_id, lambda a: {**a, "status": "in-progress", "completed_at": None,
                                                  "_": {**a["_"], "owner": gone}})
    second = fresh_server(tmp_path / "cloud")
    assert second.wait_action(action_id)["status"] == "completed"
    again = second.get(f"droplets/{droplet['id']}")["droplet"]
    assert again["status"] == "active" and again["networks"]["v4"]


def test_a_power_off_left_in_progress_is_finished(tmp_path: Path, fresh_server: Callable[..., Any]) -> None:
    first = fresh_server(tmp_path / "cloud")
    droplet = first.active_droplet("half-off")
    first.handle.close()
    store = Store(tmp_path / "cloud")
    with store.transaction() as txn:
        from relaunch.sandbox.droplets import new_action

        action = new_action(txn, {"pid": 1 << 22, "instance": "dead"}, "power_off", droplet["id"], "droplet", "nyc3")
        doc = txn.get("droplet", droplet["id"])
        txn.put("droplet", droplet["id"], {**doc, "locked": True})
    second = fresh_server(tmp_path / "cloud")
    assert second.wait_action(action["id"])["status"] == "completed"
    got = second.get(f"droplets/{droplet['id']}")["droplet"]
    assert (got["status"], got["locked"]) == ("off", False)
