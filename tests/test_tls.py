"""TLS helpers: the DER walk agrees with a real X.509 parser."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kolabmon import tls


def _certificate(not_after: dt.datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "kolab.example.org")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_after - dt.timedelta(days=400)).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("year", [1999, 2031, 2049, 2050, 2077])  # UTCTime before 2050, GeneralizedTime after
def test_not_after_matches_cryptography(year: int) -> None:
    when = dt.datetime(year, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    der = _certificate(when)
    assert tls.not_after(der) == when == x509.load_der_x509_certificate(der).not_valid_after_utc


class _Sock:
    def __init__(self, der: bytes) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool = False) -> bytes:
        return self.der


def test_days_left_counts_down_and_goes_negative() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert tls.days_left(_Sock(_certificate(now + dt.timedelta(days=5))), now) == 5
    assert tls.days_left(_Sock(_certificate(now - dt.timedelta(days=2))), now) == -2


def test_context_verifies_unless_insecure() -> None:
    assert tls.context().verify_mode == ssl.CERT_REQUIRED
    assert tls.context().check_hostname
    insecure = tls.context(insecure=True)
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
