from __future__ import annotations

import threading
from pathlib import Path

import pytest

from relaunch.sandbox.store import Conflict, Store


def test_insert_get_list_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.transaction() as txn:
        for key in (3, 1, 2):
            txn.insert("thing", key, {"k": key})
    assert [d["k"] for d in store.list("thing")] == [3, 1, 2]
    assert store.get("thing", "1") == {"k": 1}
    assert store.get("other", 1) is None


def test_insert_twice_conflicts_and_rolls_back(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.transaction() as txn:
        txn.insert("thing", 1, {})
    with pytest.raises(Conflict):
        with store.transaction() as txn:
            txn.insert("thing", 2, {})
            txn.insert("thing", 1, {})
    assert store.get("thing", 2) is None


def test_put_keeps_position_and_update_is_atomic(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.transaction() as txn:
        txn.insert("n", "a", {"v": 0})
        txn.insert("n", "b", {"v": 0})

    def bump() -> None:
        for _ in range(50):
            store.update("n", "a", lambda d: {"v": d["v"] + 1})

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("n", "a") == {"v": 200}
    assert [d["v"] for d in store.list("n")] == [200, 0]
    assert store.update("n", "missing", lambda d: d) is None


def test_ids_are_unique_and_survive_reopening(tmp_path: Path) -> None:
    with Store(tmp_path).transaction() as txn:
        first = txn.new_id()
    with Store(tmp_path).transaction() as txn:
        assert txn.new_id() == first + 1


def test_delete(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.transaction() as txn:
        txn.insert("t", 1, {})
        assert txn.delete("t", 1) and not txn.delete("t", 1)


def test_two_clouds_do_not_share_ids(tmp_path: Path) -> None:
    with Store(tmp_path / "a").transaction() as a, Store(tmp_path / "b").transaction() as b:
        assert a.new_id() != b.new_id()
