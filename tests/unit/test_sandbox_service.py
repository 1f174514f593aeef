"""The record of the background API (api.json) the sandbox writes and the product reads, without starting one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from relaunch.cloud import local
from relaunch.sandbox import service


@pytest.fixture
def healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "healthy", lambda api: True)


def test_running_reads_back_the_dns_port(tmp_path: Path, healthy: None) -> None:
    (tmp_path / "api.json").write_text(json.dumps({"pid": os.getpid(), "port": 8080, "dns_port": 5353}))
    assert service.running(tmp_path) == service.Service(pid=os.getpid(), port=8080, state_dir=tmp_path, dns_port=5353)


def test_running_accepts_a_service_started_before_dns(tmp_path: Path, healthy: None) -> None:
    (tmp_path / "api.json").write_text(json.dumps({"pid": os.getpid(), "port": 8080}))
    assert service.running(tmp_path).dns_port is None


def test_running_ignores_a_broken_record(tmp_path: Path, healthy: None) -> None:
    (tmp_path / "api.json").write_text(json.dumps({"pid": os.getpid(), "port": 8080, "dns_port": "x"}))
    assert service.running(tmp_path) is None


def test_free_dns_port_is_free_for_udp_and_tcp() -> None:
    import socket

    port = service._free_dns_port(avoid=0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", port))
        tcp.bind(("127.0.0.1", port))
