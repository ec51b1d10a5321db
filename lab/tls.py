"""The lab's certificates: a CA and the good/expiring/expired/rogue server certificates (the last
from a second, untrusted CA), made with the openssl CLI."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.util import LabError, fresh_dir, make_traversable, mkdir, run, write

CERT_VARIANTS = ("good", "expiring", "expired", "rogue")
# the single-host lab's subjectAltNames (the cluster lab passes its own)
SAN = "DNS:localhost," + ",".join(f"IP:127.0.0.{i}" for i in range(1, 10))


@dataclass
class Certs:
    """PEM files under <root>/tls made with the openssl CLI."""

    ca: Path
    cert: Path
    key: Path
    expiring_cert: Path
    expiring_key: Path
    expired_cert: Path
    expired_key: Path
    rogue_cert: Path
    rogue_key: Path

    def pair(self, variant: str) -> tuple[Path, Path]:
        """(cert, key) for ``variant`` in good/expiring/expired/rogue."""
        pairs = {"good": (self.cert, self.key),
                 "expiring": (self.expiring_cert, self.expiring_key),
                 "expired": (self.expired_cert, self.expired_key),
                 "rogue": (self.rogue_cert, self.rogue_key)}
        if variant not in pairs:
            raise LabError(f"unknown cert variant {variant!r} (use one of {CERT_VARIANTS})")
        return pairs[variant]


_CA_CNF = """\
[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = unused
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ ca ]
default_ca = lab_ca
[ lab_ca ]
dir = {dir}
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir/newcerts
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
default_days = 3650
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ policy_any ]
commonName = supplied
[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _asn1_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ")


def _make_ca(ca_dir: Path, cn: str, san: str, log: Path) -> Path:
    """Create a CA (key, self-signed cert, openssl ca database) in ``ca_dir``."""
    fresh_dir(ca_dir)
    mkdir(ca_dir / "newcerts", 0o700)
    (ca_dir / "index.txt").write_text("")
    (ca_dir / "serial").write_text(os.urandom(8).hex().upper() + "\n")
    cnf = write(ca_dir / "ca.cnf", _CA_CNF.format(dir=ca_dir, san=san))
    run("certs", ["openssl", "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes",
                  "-config", str(cnf), "-extensions", "v3_ca", "-subj", f"/CN={cn}",
                  "-days", "3650", "-keyout", str(ca_dir / "ca.key"),
                  "-out", str(ca_dir / "ca.pem")], log=log)
    (ca_dir / "ca.key").chmod(0o600)
    return ca_dir / "ca.pem"


def _issue(ca_dir: Path, cert: Path, key: Path, start: dt.datetime, end: dt.datetime,
           log: Path) -> None:
    """Issue a server cert (CN=localhost, lab SANs) from the CA in ``ca_dir``."""
    cnf = ca_dir / "ca.cnf"
    csr = cert.with_suffix(".csr")
    run("certs", ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-config", str(cnf),
                  "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr)], log=log)
    key.chmod(0o600)
    run("certs", ["openssl", "ca", "-batch", "-config", str(cnf), "-extensions", "server_ext",
                  "-notext", "-startdate", _asn1_time(start), "-enddate", _asn1_time(end),
                  "-in", str(csr), "-out", str(cert)], log=log)
    cert.chmod(0o644)
    csr.unlink()


def _valid_for(cert: Path, seconds: int) -> bool:
    res = subprocess.run(["openssl", "x509", "-checkend", str(seconds), "-noout", "-in", str(cert)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return res.returncode == 0


def make_certs(root: Path, san: str = SAN) -> Certs:
    """Create (or reuse) the lab CA and the good/expiring/expired/rogue server certs under
    ``root``/tls, the server certs valid for ``san`` (an openssl subjectAltName list).

    Idempotent: existing files are reused unless they were made for other SANs; the expiring
    cert is re-issued when it has less than 4 days left.
    """
    ca_cnf = Path(root) / "tls" / "ca" / "ca.cnf"
    if ca_cnf.exists() and f"subjectAltName = {san}\n" not in ca_cnf.read_text():
        shutil.rmtree(Path(root) / "tls")  # made for other SANs
    tls = mkdir(Path(root) / "tls")
    make_traversable(tls)
    log = tls / "openssl.log"
    certs = Certs(ca=tls / "ca.pem", cert=tls / "cert.pem", key=tls / "key.pem",
                  expiring_cert=tls / "expiring-cert.pem", expiring_key=tls / "expiring-key.pem",
                  expired_cert=tls / "expired-cert.pem", expired_key=tls / "expired-key.pem",
                  rogue_cert=tls / "rogue-cert.pem", rogue_key=tls / "rogue-key.pem")
    now = dt.datetime.now(dt.UTC)
    ca_dir, rogue_dir = tls / "ca", tls / "rogue-ca"
    if not (certs.ca.exists() and (ca_dir / "ca.key").exists()):
        for path in (certs.cert, certs.expiring_cert, certs.expired_cert):
            path.unlink(missing_ok=True)
        shutil.copyfile(_make_ca(ca_dir, "kolabmon lab CA", san, log), certs.ca)
    if not (rogue_dir / "ca.key").exists():
        certs.rogue_cert.unlink(missing_ok=True)
        _make_ca(rogue_dir, "kolabmon rogue CA", san, log)
    hour, day = dt.timedelta(hours=1), dt.timedelta(days=1)
    wanted = [
        (ca_dir, certs.cert, certs.key, now - hour, now + 3650 * day, 3000 * 86400),
        (ca_dir, certs.expiring_cert, certs.expiring_key, now - hour, now + 5 * day, 4 * 86400),
        (ca_dir, certs.expired_cert, certs.expired_key, now - 30 * day, now - day, None),
        (rogue_dir, certs.rogue_cert, certs.rogue_key, now - hour, now + 3650 * day, 3000 * 86400),
    ]
    for ca, cert, key, start, end, min_left in wanted:
        fresh = cert.exists() and key.exists() and (min_left is None or _valid_for(cert, min_left))
        if not fresh:
            _issue(ca, cert, key, start, end, log)
    return certs

