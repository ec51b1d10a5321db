"""Fake DNS servers (UDP on 127.0.0.1), one per fault the lab's dnsmasq cannot produce.

dnsmasq with --no-resolv REFUSEs every name and type it has no record for: it never says
NXDOMAIN, never answers NOERROR without records, and always speaks DNS. Each fake is started
with `with Fault() as port:` and answers from a thread.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class FakeDns:
    """Answers each UDP query with whatever `answer` makes of it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        return self.port

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stopping.set()
        self.thread.join(timeout=1)
        self.sock.close()

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                query, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.sock.sendto(self.answer(query), client)

    def answer(self, query: bytes) -> bytes:
        raise NotImplementedError


def _reply(query: bytes, rcode: int, address: str | None = None) -> bytes:
    import dns.message
    import dns.rdatatype
    import dns.rrset

    request = dns.message.from_wire(query)
    reply = dns.message.make_response(request)
    reply.set_rcode(rcode)
    question = request.question[0]
    if address and question.rdtype == dns.rdatatype.A:
        reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", address))
    return reply.to_wire()


class NxDomain(FakeDns):
    """Says that no name exists (a zone that lost the name, or a typo in the zone file)."""

    def answer(self, query: bytes) -> bytes:
        import dns.rcode

        return _reply(query, dns.rcode.NXDOMAIN)


class MissingRecords(FakeDns):
    """Every name has an A record (10.99.0.100) and nothing else: MX, SRV, AAAA are NOERROR, empty."""

    def answer(self, query: bytes) -> bytes:
        import dns.rcode

        return _reply(query, dns.rcode.NOERROR, "10.99.0.100")


class GarbageDns(FakeDns):
    """Answers every query with bytes that are no DNS message at all."""

    def answer(self, query: bytes) -> bytes:
        return b"\x00\xffHELLO? this is not a name server \x1b[31m\r\n"
