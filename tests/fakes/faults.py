"""Fake TCP servers, one per fault a real server cannot be made to produce on demand.

Each is started with `with Fault(...) as port:` and serves on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType


class FakeServer:
    """Accepts connections on a free loopback port and runs `handle` for each."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.clients: list[socket.socket] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        return self.port

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stopping.set()
        self.listener.close()
        for client in self.clients:
            client.close()

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.clients.append(client)
            threading.Thread(target=self.handle, args=(client,), daemon=True).start()

    def handle(self, client: socket.socket) -> None:
        raise NotImplementedError


class Silent(FakeServer):
    """Accepts the connection and never says a word (a hung server)."""

    def handle(self, client: socket.socket) -> None:
        self.stopping.wait()


class GarbageBanner(FakeServer):
    """Answers with bytes that are no protocol at all, then reads and answers garbage again."""

    GARBAGE = b"\x00\xffHELLO? this is not a mail server \x1b[31m\r\n"

    def handle(self, client: socket.socket) -> None:
        try:
            client.sendall(self.GARBAGE)
            while client.recv(4096):
                client.sendall(self.GARBAGE)
        except OSError:
            pass


class ResetMidLogin(FakeServer):
    """Greets like an IMAP server and answers CAPABILITY, then resets (RST) on the login.

    Without a greeting (LDAP, where the client speaks first) it resets on the first request,
    the bind."""

    def __init__(self, greeting: bytes = b"") -> None:
        super().__init__()
        self.greeting = greeting

    def handle(self, client: socket.socket) -> None:
        try:
            if self.greeting:
                client.sendall(self.greeting)
            request = b""
            while not request.endswith(b"\n") and len(request) < 8192:
                chunk = client.recv(4096)
                if not chunk:
                    break
                request += chunk
                if self.greeting == b"":  # binary protocols (LDAP): the first packet is enough
                    break
                if b"CAPABILITY" in request.upper():  # let capability probes through, reset on login
                    tag = request.split()[0]
                    client.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                    request = b""
        except OSError:
            pass
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
