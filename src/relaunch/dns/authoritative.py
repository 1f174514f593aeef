"""Ask a zone's authoritative name servers directly what they answer (no resolver, no cache).

After records change, a resolver's cache says what was true up to a TTL ago; the
authoritative servers say what is true now. ``wait_until_answers`` polls them until
every name answers the expected address, within a bounded time.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from relaunch.errors import RelaunchError
from relaunch.poll import attempts

log = logging.getLogger(__name__)

Server = tuple[str, int]


@dataclass(frozen=True)
class Answer:
    """What one server answered: the records' texts (``192.0.2.1``, ``www.example.com.``),
    their TTL (None without records) and the rcode's name (``NOERROR``, ``NXDOMAIN``, ``REFUSED`` …)."""

    records: list[str]
    ttl: int | None
    rcode: str


@dataclass(frozen=True)
class WaitResult:
    """How a wait ended: ``seconds`` it took, each name's last answer (the first server's that
    disagreed, else the agreed one), and whether every server answered every name as expected."""

    seconds: float
    answers: dict[str, list[str]] = field(default_factory=dict)
    ok: bool = False


def query(name: str, rdtype: str, server: str, port: int = 53, timeout: float = 2.0, tcp: bool = False) -> Answer:
    """Ask ``server``:``port`` once (recursion not desired) for ``name``'s ``rdtype`` records.

    Return the records of that type owned by ``name`` in the answer section, following a
    CNAME chain there (an alias answers its target's records, with the target's TTL). A truncated UDP answer is asked again over TCP. Raise
    RelaunchError if the server does not answer within ``timeout`` or cannot be reached.
    """
    qname = dns.name.from_text(name)
    qtype = dns.rdatatype.from_text(rdtype)
    message = dns.message.make_query(qname, qtype)
    message.flags &= ~dns.flags.RD
    try:
        if tcp:
            response = dns.query.tcp(message, server, timeout=timeout, port=port)
        else:
            response = dns.query.udp(message, server, timeout=timeout, port=port, ignore_trailing=True)
            if response.flags & dns.flags.TC:
                response = dns.query.tcp(message, server, timeout=timeout, port=port)
    except dns.exception.Timeout:
        raise RelaunchError(f"{server}:{port} did not answer {name} {rdtype} within {timeout:g} s") from None
    except (OSError, dns.exception.DNSException) as exc:
        raise RelaunchError(f"asking {server}:{port} for {name} {rdtype} failed: {exc}") from None
    # Follow a CNAME chain within the answer: a name that is an alias answers its target's records.
    owner, records, ttl = qname, [], None
    for _ in range(len(response.answer) + 1):
        rrset = response.get_rrset(response.answer, owner, dns.rdataclass.IN, qtype)
        if rrset is not None:
            records, ttl = [rdata.to_text() for rdata in rrset], rrset.ttl
            break
        alias = response.get_rrset(response.answer, owner, dns.rdataclass.IN, dns.rdatatype.CNAME)
        if alias is None or qtype == dns.rdatatype.CNAME:
            break
        owner = alias[0].target
    return Answer(records=records, ttl=ttl, rcode=dns.rcode.to_text(response.rcode()))


def wait_until_answers(
    names: Sequence[str],
    rdtype: str,
    expected: str,
    servers: Sequence[Server],
    timeout: float,
    interval: float = 0.5,
) -> WaitResult:
    """Poll every server for every name until each answers exactly ``expected`` (one record).

    Addresses compare as addresses (``2001:DB8::1`` is ``2001:db8::1``). A server that
    times out or fails counts as not answering yet. Stop after ``timeout`` seconds at the
    latest (each query's own timeout is cut to what remains); between rounds wait
    ``interval`` s. Never raises for DNS trouble: ``ok`` says whether it converged.
    """
    if not servers:
        raise RelaunchError("no authoritative name servers to ask")
    want = [_normal(expected)]
    started = time.monotonic()
    deadline = started + timeout
    answers: dict[str, list[str]] = {}
    for _ in attempts(timeout, first=interval, factor=1.0):
        ok = True
        for name in names:  # every name every round, so the result shows each one's answer
            agreed: list[str] | None = None
            for host, port in servers:
                remaining = deadline - time.monotonic()
                try:
                    got = query(name, rdtype, host, port, timeout=max(0.05, min(2.0, remaining))).records
                except RelaunchError as exc:
                    log.debug("%s", exc)
                    got = []
                if [_normal(r) for r in got] != want:
                    answers[name] = got
                    ok = False
                    break
                agreed = got
            if agreed is not None and ok:
                answers[name] = agreed
        if ok:
            return WaitResult(seconds=time.monotonic() - started, answers=answers, ok=True)
    return WaitResult(seconds=time.monotonic() - started, answers=answers, ok=False)


def authoritative_servers_for(zone: str, sandbox_dns_port: int | None) -> list[Server]:
    """Return the (address, port) of every authoritative name server of ``zone``.

    In the sandbox (``sandbox_dns_port`` given) that is the simulator's own server,
    ``[("127.0.0.1", sandbox_dns_port)]``. For real DigitalOcean, the zone's NS records
    (ns1/ns2/ns3.digitalocean.com) are looked up through the system resolver, then their
    IPv4 addresses, port 53. That path needs the internet and is not exercised by the
    tests (which contact nothing but 127.0.0.1). Raise RelaunchError if none resolve.
    """
    if sandbox_dns_port is not None:
        return [("127.0.0.1", sandbox_dns_port)]
    resolver = dns.resolver.Resolver()
    try:
        ns_names = sorted(rdata.target.to_text() for rdata in resolver.resolve(zone, "NS"))
    except dns.exception.DNSException as exc:
        raise RelaunchError(f"could not find the name servers of {zone}: {exc}") from None
    servers: list[Server] = []
    for ns in ns_names:
        try:
            servers.extend((rdata.address, 53) for rdata in resolver.resolve(ns, "A"))
        except dns.exception.DNSException as exc:
            log.warning("name server %s of %s does not resolve: %s", ns, zone, exc)
    if not servers:
        raise RelaunchError(f"none of the name servers of {zone} ({', '.join(ns_names)}) resolves to an address")
    return servers


def _normal(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value.lower().rstrip(".")
