"""The sandbox cloud's authoritative name server: its zones, answered on 127.0.0.1 (UDP and TCP).

Answers come from the same store the API writes, read on every query, so a record changed
through the API is what the next query sees. Like DigitalOcean's servers it is
authoritative only (AA set, no recursion): REFUSED for a name outside every zone,
NXDOMAIN with the zone's SOA for an unknown name inside one. The SOA is built from the
zone (serial = the zone's change counter, see ``resources.zone_serial``).

Not covered: wildcard records and DNSSEC; an NS record below the apex is answered as a
referral (NS in the authority section, AA clear).
"""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from relaunch.sandbox.resources import NAME_SERVERS, fqdn, zone_serial
from relaunch.sandbox.store import Store

log = logging.getLogger(__name__)

#: Threads answering queries; a TCP connection holds one while it is open.
WORKERS = 8
#: Queries (UDP datagrams, TCP connections) waiting for a worker; beyond that they are dropped.
BACKLOG = 64
#: Seconds a TCP connection may stay idle (RFC 7766 suggests seconds, not minutes).
TCP_IDLE = 5.0
_CNAME_CHAIN = 8


@dataclass(frozen=True)
class _Zone:
    name: dns.name.Name
    serial: int
    records: list[dict[str, Any]]


class DnsServer:
    """An authoritative DNS server for the zones in ``store``, on ``host``:``port`` (UDP and TCP).

    ``port=0`` picks a port free for both protocols. ``start()`` returns once both sockets
    listen; ``close()`` stops the threads and closes open connections (idempotent).
    """

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 0, *, workers: int = WORKERS) -> None:
        self.store = store
        self.host = host
        self._udp, self._tcp = _bind_pair(host, port)
        self.port: int = self._udp.getsockname()[1]
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(BACKLOG)
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._listen, name=f"sandbox-dns-{self.port}", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"sandbox-dns-{self.port}-w{i}", daemon=True)
            for i in range(workers)
        ]
        self._closed = False

    def start(self) -> "DnsServer":
        for thread in self._threads:
            thread.start()
        log.info("sandbox DNS on %s:%d (UDP and TCP)", self.host, self.port)
        return self

    def close(self) -> None:
        """Stop serving: no new queries, open TCP connections shut, threads joined."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for _ in self._threads[1:]:
            self._queue.put(None)  # blocks only while the backlog is full, which workers drain
        for thread in self._threads:
            thread.join(timeout=TCP_IDLE + 5)
        self._udp.close()
        self._tcp.close()

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- network -----

    def _listen(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ, "udp")
            sel.register(self._tcp, selectors.EVENT_READ, "tcp")
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    try:
                        if key.data == "udp":
                            item: tuple[str, Any] = ("udp", self._udp.recvfrom(65535))
                        else:
                            item = ("tcp", self._tcp.accept()[0])
                    except OSError:
                        continue
                    try:
                        self._queue.put_nowait(item)
                    except queue.Full:
                        log.warning("sandbox DNS busy: dropping a %s query", item[0])
                        if item[0] == "tcp":
                            item[1].close()

    def _work(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None or self._stop.is_set():
                    if item is not None and item[0] == "tcp":
                        item[1].close()
                    if item is None:
                        return
                    continue
                try:
                    if item[0] == "udp":
                        data, addr = item[1]
                        reply = self.answer(data, max_size=None)
                        if reply is not None:
                            self._udp.sendto(reply, addr)
                    else:
                        self._serve_tcp(item[1])
                except Exception:  # one bad query must not take a worker down
                    log.exception("sandbox DNS: failed to answer a %s query", item[0])
        finally:
            self.store.close()  # this thread's database connection

    def _serve_tcp(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
        try:
            conn.settimeout(TCP_IDLE)
            while not self._stop.is_set():
                header = _recv_exactly(conn, 2)
                if header is None:
                    return
                data = _recv_exactly(conn, struct.unpack("!H", header)[0])
                if data is None:
                    return
                reply = self.answer(data, max_size=65535)
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    # ----- answers -----

    def answer(self, wire: bytes, max_size: int | None) -> bytes | None:
        """Return the wire answer to the query ``wire`` (None: unparseable, no answer).

        ``max_size`` None means UDP: 512 bytes, or the query's EDNS payload size; an answer
        that does not fit is sent truncated (TC) so the client retries over TCP.
        """
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            if len(wire) < 12:
                return None
            reply = dns.message.Message(id=struct.unpack("!H", wire[:2])[0])
            reply.flags |= dns.flags.QR
            reply.set_rcode(dns.rcode.FORMERR)
            return reply.to_wire()
        if query.flags & dns.flags.QR:
            return None  # a response sent to us; never answer one
        response = dns.message.make_response(query)
        response.flags &= ~dns.flags.RA
        self._fill(query, response)
        if max_size is None:
            max_size = max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            response.answer, response.authority, response.additional = [], [], []
            response.flags |= dns.flags.TC
            return response.to_wire()

    def _fill(self, query: dns.message.Message, response: dns.message.Message) -> None:
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return
        zone = self._zone_for(question.name)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return
        response.flags |= dns.flags.AA
        rrsets = _rrsets(zone)
        qname, qtype = question.name, question.rdtype
        for _ in range(_CNAME_CHAIN):
            cut = _delegation(zone, rrsets, qname)
            if cut is not None:  # a subdomain delegated elsewhere: refer, not authoritative
                response.flags &= ~dns.flags.AA
                response.authority.append(rrsets[(cut, dns.rdatatype.NS)])
                return
            at_name = {t: r for (n, t), r in rrsets.items() if n == qname}
            if not at_name:
                if not any(n.is_subdomain(qname) for n, _ in rrsets):
                    if not response.answer:  # a CNAME chain ending in nothing is still NOERROR
                        response.set_rcode(dns.rcode.NXDOMAIN)
                response.authority.append(_negative_soa(rrsets, zone))
                return
            if qtype == dns.rdatatype.ANY:
                response.answer.extend(at_name.values())
                return
            if qtype in at_name:
                response.answer.append(at_name[qtype])
                return
            cname = at_name.get(dns.rdatatype.CNAME)
            if cname is None:
                response.authority.append(_negative_soa(rrsets, zone))  # NODATA
                return
            response.answer.append(cname)
            qname = cname[0].target
            if not qname.is_subdomain(zone.name):
                return  # the resolver follows it from here
        # A CNAME loop: what was found so far is the answer.

    def _zone_for(self, name: dns.name.Name) -> _Zone | None:
        best: dict[str, Any] | None = None
        for doc in self.store.list("domain"):
            origin = dns.name.from_text(doc["name"])
            if name.is_subdomain(origin) and (best is None or len(origin) > len(dns.name.from_text(best["name"]))):
                best = doc
        if best is None:
            return None
        records = [r for r in self.store.list("record") if r["_"]["domain"] == best["name"]]
        # The serial is read after the records: a change between the two reads shows the
        # new serial with old records at worst, never new records with an old serial.
        current = self.store.get("domain", best["name"]) or best
        return _Zone(dns.name.from_text(best["name"]), zone_serial(current), records)


def _bind_pair(host: str, port: int, attempts: int = 20) -> tuple[socket.socket, socket.socket]:
    """Bind a UDP and a TCP socket on the same port (a free one if ``port`` is 0)."""
    for _ in range(attempts if port == 0 else 1):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind((host, port))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((host, udp.getsockname()[1]))
                tcp.listen(BACKLOG)
            except OSError:
                tcp.close()
                raise
        except OSError:
            udp.close()
            if port:
                raise
            continue
        return udp, tcp
    raise OSError(f"no port on {host} free for both UDP and TCP after {attempts} attempts")


def _recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        chunk = conn.recv(size - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _rrsets(zone: _Zone) -> dict[tuple[dns.name.Name, int], dns.rrset.RRset]:
    """The zone's records as RRsets by (owner, type); one RRset's TTL is its records' lowest (RFC 2181)."""
    out: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
    apex_ns = [r for r in zone.records if r["type"] == "NS" and fqdn(r["name"], zone.name.to_text(True)) == zone.name.to_text(True)]
    for rec in zone.records:
        try:
            owner = dns.name.from_text(fqdn(rec["name"], zone.name.to_text(True)))
            rdata = _rdata(rec, zone, apex_ns)
        except (dns.exception.DNSException, ValueError, TypeError) as exc:
            log.warning("sandbox DNS: skipping record %s (%s %s): %s", rec.get("id"), rec.get("type"), rec.get("name"), exc)
            continue
        key = (owner, rdata.rdtype)
        rrset = out.get(key)
        if rrset is None:
            rrset = out[key] = dns.rrset.RRset(owner, dns.rdataclass.IN, rdata.rdtype)
            rrset.update_ttl(int(rec["ttl"]))
        rrset.add(rdata, int(rec["ttl"]))  # add() keeps the lower TTL
    return out


def _rdata(rec: dict[str, Any], zone: _Zone, apex_ns: list[dict[str, Any]]) -> dns.rdata.Rdata:
    origin = zone.name.to_text(True)
    type_, data = rec["type"], rec["data"]

    def target(value: str) -> str:
        return value if value.endswith(".") else fqdn(value, origin) + "."

    def server(value: str) -> str:
        # DigitalOcean stores its NS targets without the final dot ("ns1.digitalocean.com"):
        # a name server is absolute unless it is "@" or one label.
        return target(value) if value == "@" or "." not in value.rstrip(".") else value.rstrip(".") + "."

    if type_ == "SOA":
        mname = server(apex_ns[0]["data"]) if apex_ns else NAME_SERVERS[0] + "."
        minimum = int(data) if str(data).isdigit() else 1800
        text = f"{mname} hostmaster.{origin}. {zone.serial} 10800 3600 604800 {minimum}"
    elif type_ == "NS":
        text = server(data)
    elif type_ == "CNAME":
        text = target(data)
    elif type_ == "MX":
        text = f"{rec['priority']} {target(data)}"
    elif type_ == "SRV":
        text = f"{rec['priority']} {rec['weight']} {rec['port']} {target(data)}"
    elif type_ == "TXT":
        raw = data.encode()
        text = " ".join(_quote_bytes(raw[i : i + 255]) for i in range(0, len(raw), 255)) or '""'
    elif type_ == "CAA":
        text = f'{rec.get("flags") or 0} {rec.get("tag") or "issue"} "{data.replace(chr(34), chr(92) + chr(34))}"'
    else:  # A, AAAA
        text = data
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(type_), text)


def _quote_bytes(chunk: bytes) -> str:
    return '"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\{b:03d}" for b in chunk) + '"'


def _delegation(zone: _Zone, rrsets: dict[tuple[dns.name.Name, int], dns.rrset.RRset], qname: dns.name.Name) -> dns.name.Name | None:
    """Return the highest delegated name (NS below the apex) at or above ``qname``, if any."""
    name = qname
    cut = None
    while name != zone.name and name.is_subdomain(zone.name):
        if (name, dns.rdatatype.NS) in rrsets:
            cut = name
        name = name.parent()
    return cut


def _negative_soa(rrsets: dict[tuple[dns.name.Name, int], dns.rrset.RRset], zone: _Zone) -> dns.rrset.RRset:
    """The SOA for a negative answer, its TTL capped by its minimum field (RFC 2308)."""
    soa = rrsets.get((zone.name, dns.rdatatype.SOA))
    if soa is None:  # a zone whose SOA record was deleted still has one
        soa = dns.rrset.from_text(zone.name, 1800, "IN", "SOA",
                                  f"{NAME_SERVERS[0]}. hostmaster.{zone.name.to_text(True)}. {zone.serial} 10800 3600 604800 1800")
    out = dns.rrset.RRset(soa.name, soa.rdclass, soa.rdtype)
    out.update(soa)
    out.ttl = min(soa.ttl, soa[0].minimum)
    return out
