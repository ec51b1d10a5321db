"""TLS for every probe: a context that verifies by default, and the certificate's days left."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime


def context(ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """Verify the chain and the host name, unless the admin explicitly said `--insecure`."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def days_left(sock: object, now: datetime | None = None) -> float:
    """Days until the peer certificate of a TLS socket expires (negative once expired)."""
    der = sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    if not der:
        raise ValueError("the server sent no certificate")
    expiry = not_after(der)
    return round((expiry - (now or datetime.now(UTC))).total_seconds() / 86400, 2)


def not_after(der: bytes) -> datetime:
    """The notAfter time of a DER certificate (a small walk, so `--insecure` needs no parser)."""
    _, cert = _read(der, 0)  # Certificate ::= SEQUENCE { tbsCertificate, ... }
    _, tbs = _read(cert, 0)
    position = 0
    fields: list[bytes] = []
    while position < len(tbs) and len(fields) < 5:
        tag = tbs[position]
        position, value = _read(tbs, position)
        if tag != 0xA0:  # skip the optional explicit [0] version
            fields.append(value)
    validity = fields[3]  # serial, signature, issuer, validity
    position, _ = _read(validity, 0)
    tag = validity[position]
    _, value = _read(validity, position)
    text = value.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def _read(data: bytes, position: int) -> tuple[int, bytes]:
    """Read one DER TLV at position: returns (position after it, its value)."""
    length = data[position + 1]
    position += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[position:position + count], "big")
        position += count
    return position + length, data[position:position + length]
