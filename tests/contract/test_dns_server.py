"""The simulator's DNS server answers from the records the API changes (UDP and TCP)."""

from __future__ import annotations

import secrets

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest

from relaunch.dns.authoritative import query

HOST = "127.0.0.1"


@pytest.fixture
def zone(client) -> str:
    name = f"dns-{secrets.token_hex(4)}.example"
    client.call("POST", "domains", json={"name": name, "ip_address": "192.0.2.10"}, status=201)
    yield name
    client.call("DELETE", f"domains/{name}", status=204)


def _soa_serial(port: int, zone: str) -> int:
    return int(query(zone, "SOA", HOST, port).records[0].split()[2])


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_records_made_through_the_api_are_answered(client, zone: str, tcp: bool) -> None:
    port = client.handle.dns_port
    for body in (
        {"type": "A", "name": "app", "data": "192.0.2.20", "ttl": 60},
        {"type": "AAAA", "name": "app", "data": "2001:db8::20", "ttl": 90},
        {"type": "CNAME", "name": "www", "data": "app", "ttl": 300},
        {"type": "MX", "name": "@", "data": "mail", "priority": 10, "ttl": 3600},
        {"type": "TXT", "name": "@", "data": "v=spf1 -all", "ttl": 3600},
        {"type": "CAA", "name": "@", "data": "letsencrypt.org", "flags": 0, "tag": "issue", "ttl": 3600},
        {"type": "SRV", "name": "_imap._tcp", "data": "mail", "priority": 1, "weight": 5, "port": 993, "ttl": 3600},
    ):
        client.call("POST", f"domains/{zone}/records", json=body, status=201)
    expect = {
        (zone, "A"): (["192.0.2.10"], 1800),
        (f"app.{zone}", "A"): (["192.0.2.20"], 60),
        (f"app.{zone}", "AAAA"): (["2001:db8::20"], 90),
        (f"www.{zone}", "CNAME"): ([f"app.{zone}."], 300),
        (zone, "MX"): ([f"10 mail.{zone}."], 3600),
        (zone, "TXT"): (['"v=spf1 -all"'], 3600),
        (zone, "CAA"): (['0 issue "letsencrypt.org"'], 3600),
        (f"_imap._tcp.{zone}", "SRV"): ([f"1 5 993 mail.{zone}."], 3600),
        (zone, "NS"): (["ns1.digitalocean.com.", "ns2.digitalocean.com.", "ns3.digitalocean.com."], 1800),
    }
    for (name, rdtype), (records, ttl) in expect.items():
        got = query(name, rdtype, HOST, port, tcp=tcp)
        assert (sorted(got.records), got.ttl, got.rcode) == (records, ttl, "NOERROR"), (name, rdtype)
    soa = query(zone, "SOA", HOST, port, tcp=tcp).records[0].split()
    assert soa[:2] == ["ns1.digitalocean.com.", f"hostmaster.{zone}."]
    raw = dns.message.make_query(f"app.{zone}", "A")
    reply = (dns.query.tcp if tcp else dns.query.udp)(raw, HOST, port=port, timeout=2)
    assert reply.flags & dns.flags.AA


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_a_changed_record_is_the_next_answer_and_raises_the_serial(client, zone: str, method: str) -> None:
    port = client.handle.dns_port
    rec = client.call("POST", f"domains/{zone}/records",
                      json={"type": "A", "name": "app", "data": "192.0.2.20", "ttl": 1800}, status=201).json()["domain_record"]
    serial = _soa_serial(port, zone)
    client.call(method, f"domains/{zone}/records/{rec['id']}", json={"type": "A", "data": "203.0.113.5", "ttl": 60}, status=200)
    assert query(f"app.{zone}", "A", HOST, port).records == ["203.0.113.5"]
    assert query(f"app.{zone}", "A", HOST, port, tcp=True).ttl == 60
    assert _soa_serial(port, zone) > serial


def test_a_deleted_record_is_nxdomain_with_the_soa(client, zone: str) -> None:
    port = client.handle.dns_port
    rec = client.call("POST", f"domains/{zone}/records",
                      json={"type": "A", "name": "old", "data": "192.0.2.30", "ttl": 60}, status=201).json()["domain_record"]
    serial = _soa_serial(port, zone)
    client.call("DELETE", f"domains/{zone}/records/{rec['id']}", status=204)
    assert query(f"old.{zone}", "A", HOST, port).rcode == "NXDOMAIN"
    reply = dns.query.udp(dns.message.make_query(f"old.{zone}", "A"), HOST, port=port, timeout=2)
    assert [r.rdtype for r in reply.authority] == [dns.rdatatype.SOA]
    assert reply.authority[0][0].serial > serial
    assert query(f"old.{zone}", "AAAA", HOST, port, tcp=True).rcode == "NXDOMAIN"


def test_names_outside_every_zone_are_refused(client, zone: str) -> None:
    port = client.handle.dns_port
    for tcp in (False, True):
        assert query("example.org", "A", HOST, port, tcp=tcp).rcode == "REFUSED"
    client.call("DELETE", f"domains/{zone}", status=204)
    assert query(zone, "A", HOST, port).rcode == "REFUSED"
    client.call("POST", "domains", json={"name": zone}, status=201)  # for the fixture to delete


def test_no_dns_server_when_disabled(fresh_server) -> None:
    assert fresh_server(dns_port=None).handle.dns_port is None
