"""Fake SMTP servers for the faults the lab Postfix cannot be made to produce on demand.

Started like the fakes in faults.py: `with Fault(...) as port:`.
"""

from __future__ import annotations

import socket
import struct

from tests.fakes.faults import FakeServer


def _lines(client: socket.socket):
    """The client's command lines, one at a time, until it hangs up."""
    buffer = b""
    while True:
        while b"\n" not in buffer:
            chunk = client.recv(4096)
            if not chunk:
                return
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        yield line.rstrip(b"\r")


class RejectingBanner(FakeServer):
    """Greets with a refusal (`554`, `421`) instead of `220`, and answers QUIT like Postfix."""

    def __init__(self, reply: bytes = b"554 5.3.2 fake.example.org closed for maintenance") -> None:
        super().__init__()
        self.reply = reply

    def handle(self, client: socket.socket) -> None:
        try:
            client.sendall(self.reply + b"\r\n")
            for line in _lines(client):
                if line.upper().startswith(b"QUIT"):
                    client.sendall(b"221 2.0.0 Bye\r\n")
                    break
                client.sendall(b"503 5.5.0 Error: no service\r\n")
        except OSError:
            pass
        client.close()


class ResetMidSession(FakeServer):
    """Greets and answers EHLO like a Postfix offering AUTH, then resets (RST) on AUTH.

    Keeps the EHLO names it was greeted with, in `ehlo`."""

    def __init__(self) -> None:
        super().__init__()
        self.ehlo: list[str] = []

    def handle(self, client: socket.socket) -> None:
        try:
            client.sendall(b"220 fake.example.org ESMTP\r\n")
            for line in _lines(client):
                verb, _, argument = line.decode("ascii", "replace").partition(" ")
                if verb.upper() == "EHLO":
                    self.ehlo.append(argument)
                    client.sendall(b"250-fake.example.org\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n")
                else:
                    break
        except OSError:
            pass
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
