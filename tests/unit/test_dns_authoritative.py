"""relaunch.dns.authoritative against the sandbox's DNS server, in-process on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from relaunch.dns.authoritative import Answer, authoritative_servers_for, query, wait_until_answers
from relaunch.errors import RelaunchError
from relaunch.sandbox.dns import DnsServer
from relaunch.sandbox.resources import Domains
from relaunch.sandbox.store import Store

HOST = "127.0.0.1"


@pytest.fixture
def zone(tmp_path: Path) -> Iterator[tuple[Domains, DnsServer]]:
    store = Store(tmp_path)
    domains = Domains(store)
    domains.create({"name": "example.com", "ip_address": "192.0.2.1"})
    domains.create_record("example.com", {"type": "CNAME", "name": "www", "data": "@", "ttl": 60})
    domains.create_record("example.com", {"type": "AAAA", "name": "@", "data": "2001:DB8::1", "ttl": 120})
    with DnsServer(store) as server:
        yield domains, server


def _record_id(domains: Domains, name: str, type_: str) -> str:
    return str(next(r["id"] for r in domains.records("example.com", type_) if r["name"] == name))


def test_query_answers_a_record_with_its_ttl_and_the_aa_flag(zone) -> None:
    _, server = zone
    assert query("example.com", "A", HOST, server.port) == Answer(["192.0.2.1"], 1800, "NOERROR")
    raw = dns.query.udp(dns.message.make_query("example.com", "A"), HOST, port=server.port, timeout=2)
    assert raw.flags & dns.flags.AA and not raw.flags & dns.flags.RA


def test_query_follows_a_cname_to_its_target(zone) -> None:
    _, server = zone
    assert query("www.example.com", "A", HOST, server.port).records == ["192.0.2.1"]
    assert query("www.example.com", "CNAME", HOST, server.port).records == ["example.com."]


def test_query_over_tcp_answers_the_same(zone) -> None:
    _, server = zone
    assert query("example.com", "AAAA", HOST, server.port, tcp=True) == Answer(["2001:db8::1"], 120, "NOERROR")


def test_query_unknown_name_is_nxdomain_with_the_soa_in_authority(zone) -> None:
    _, server = zone
    assert query("nope.example.com", "A", HOST, server.port) == Answer([], None, "NXDOMAIN")
    raw = dns.query.udp(dns.message.make_query("nope.example.com", "A"), HOST, port=server.port, timeout=2)
    assert [r.rdtype for r in raw.authority] == [dns.rdatatype.SOA]


def test_query_outside_every_zone_is_refused(zone) -> None:
    _, server = zone
    assert query("example.org", "A", HOST, server.port).rcode == "REFUSED"


def test_query_sends_no_recursion_flag_and_raises_on_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind((HOST, 0))
        with pytest.raises(RelaunchError, match="did not answer"):
            query("example.com", "A", HOST, mute.getsockname()[1], timeout=0.2)
        sent = dns.message.from_wire(mute.recv(512))
    assert not sent.flags & dns.flags.RD


def test_query_falls_back_to_tcp_for_a_truncated_answer(zone) -> None:
    domains, server = zone
    for i in range(60):
        domains.create_record("example.com", {"type": "A", "name": "many", "data": f"198.51.100.{i}", "ttl": 60})
    raw = dns.query.udp(dns.message.make_query("many.example.com", "A", use_edns=False), HOST, port=server.port, timeout=2)
    assert raw.flags & dns.flags.TC
    assert len(query("many.example.com", "A", HOST, server.port).records) == 60


def test_server_answers_garbage_with_formerr_or_not_at_all(zone) -> None:
    _, server = zone
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(b"\x12\x34" + b"\xff" * 14, (HOST, server.port))
        reply = sock.recv(512)
    assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR
    assert query("example.com", "A", HOST, server.port).rcode == "NOERROR"  # still serving


def test_wait_until_answers_sees_a_change_made_while_waiting(zone) -> None:
    domains, server = zone
    record_id = _record_id(domains, "@", "A")
    timer = threading.Timer(0.3, domains.update_record, ("example.com", record_id, {"data": "203.0.113.7"}))
    timer.start()
    try:
        result = wait_until_answers(["example.com", "www.example.com"], "A", "203.0.113.7",
                                    [(HOST, server.port)], timeout=5, interval=0.05)
    finally:
        timer.join()
    assert result.ok and 0.25 < result.seconds < 3
    assert result.answers == {"example.com": ["203.0.113.7"], "www.example.com": ["203.0.113.7"]}


def test_wait_until_answers_gives_up_in_time_and_shows_what_was_answered(zone) -> None:
    _, server = zone
    started = time.monotonic()
    result = wait_until_answers(["example.com", "gone.example.com"], "A", "203.0.113.7",
                                [(HOST, server.port)], timeout=0.5, interval=0.1)
    assert not result.ok and time.monotonic() - started < 1.5
    assert result.answers == {"example.com": ["192.0.2.1"], "gone.example.com": []}


def test_wait_until_answers_compares_addresses_as_addresses(zone) -> None:
    _, server = zone
    result = wait_until_answers(["example.com"], "AAAA", "2001:db8:0::1", [(HOST, server.port)], timeout=2)
    assert result.ok


def test_wait_until_answers_counts_a_silent_server_as_not_answering(zone) -> None:
    _, server = zone
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind((HOST, 0))
        result = wait_until_answers(["example.com"], "A", "192.0.2.1",
                                    [(HOST, server.port), (HOST, mute.getsockname()[1])], timeout=0.4, interval=0.1)
    assert not result.ok and result.seconds < 1.5


def test_authoritative_servers_for_the_sandbox_is_its_own_server() -> None:
    assert authoritative_servers_for("example.com", 5353) == [("127.0.0.1", 5353)]


def test_server_close_frees_its_port(tmp_path: Path) -> None:
    server = DnsServer(Store(tmp_path)).start()
    port = server.port
    server.close()
    server.close()  # idempotent
    assert not any(t.is_alive() for t in server._threads)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind((HOST, port))
        tcp.bind((HOST, port))
