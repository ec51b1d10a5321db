"""HTTP client on requests: a session on kolabmon's TLS context that names its steps, a bounded
read, the certificate's days left, and requests' wrapped exceptions mapped once.

The free/busy probe fetches with it; kolabmon-notify's webhook maps its errors with it.
"""

from __future__ import annotations

from kolabmon import runtime
from kolabmon.clients import errors

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import ssl

    import requests

LIBRARIES = ("requests", "urllib3")  # their exceptions are OSErrors too: not the socket's


def session(clock: runtime.Clock, tls_context: ssl.SSLContext | None) -> requests.Session:
    """A session with nothing from the environment, on `tls_context` for https, that enters
    `waiting for the answer` once the connection is up."""
    import requests

    client = requests.Session()
    client.trust_env = False  # no proxies, netrc or CA bundle from the environment
    client.mount("http://", _adapter(None, clock))
    client.mount("https://", _adapter(tls_context, clock))
    return client


def _adapter(ssl_context: object, clock: runtime.Clock) -> requests.adapters.HTTPAdapter:
    """requests' adapter on kolabmon's TLS context, naming the step once the connection is up."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def connected() -> None:
        try:
            clock.enter("waiting for the answer")  # a hang from here on is the server's, not the network's
        except TimeoutError:
            pass  # the request's own timeout reports it

    class Plain(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            connected()

    class Tls(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            connected()

    pools = {"http": type("PlainPool", (HTTPConnectionPool,), {"ConnectionCls": Plain}),
             "https": type("TlsPool", (HTTPSConnectionPool,), {"ConnectionCls": Tls})}

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                             **pool_kwargs: object) -> None:
            if ssl_context is not None:
                pool_kwargs["ssl_context"] = ssl_context
            super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

    return Adapter()


def cert_days(response: requests.Response) -> float | None:
    """Days left on the certificate of the connection that answered (streamed: still open)."""
    from kolabmon import tls

    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    return tls.days_left(sock) if sock is not None else None


def read(response: requests.Response, clock: runtime.Clock, limit: int, expected: str) -> bytes:
    """The streamed body, at most `limit` bytes (more is not `expected`), within the deadline."""
    chunks, size = [], 0
    for chunk in response.iter_content(65536):
        size += len(chunk)
        if size > limit:
            raise runtime.PluginError(f"the answer is larger than {limit} bytes: not {expected}")
        chunks.append(chunk)
        clock.remaining()  # a server trickling bytes still hits the deadline
    return b"".join(chunks)


def failure(exc: BaseException, clock: runtime.Clock, kind: type[BaseException] | None = None
            ) -> BaseException | None:
    """requests wraps urllib3 wraps the socket error: the original for the runtime to classify, or
    one line for a timeout, a bad URL, a failed handshake or an answer that is not HTTP; None when
    there is nothing underneath (the caller says what failed).

    `kind` narrows the socket errors handed on (the webhook: connection errors only).
    """
    import http.client
    import ssl

    import requests

    if isinstance(exc, requests.Timeout):
        return TimeoutError(f"deadline reached while {clock.step}")
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return runtime.UsageError(f"invalid URL: {exc}")
    if isinstance(exc, requests.exceptions.SSLError):
        return errors.underlying(exc, ssl.SSLError) or runtime.PluginError(f"TLS failed: {one_line(exc)}")
    cause = errors.underlying(exc, kind or (OSError, http.client.HTTPException), outside=LIBRARIES)
    if cause is None or isinstance(cause, OSError):  # RemoteDisconnected is both: a reset
        return cause
    got = ascii(short(cause))  # e.g. BadStatusLine: the bytes it got instead
    return runtime.PluginError(f"the server does not answer HTTP: got {got} (while {clock.step})")


def short(exc: BaseException) -> str:
    text = str(exc.args[0] if exc.args else exc) or type(exc).__name__
    return text[:80]


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def host_of(url: str) -> str:
    """The host (and port) of a URL, without any user info: safe to print."""
    return url.split("//", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
