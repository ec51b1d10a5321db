"""OpenLDAP slapd: the lab directory and slapd.conf, written once for the single-host lab and the
cluster, and a single-host instance on loopback."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from lab.accounts import (
    CYRUS_ADMIN,
    CYRUS_ADMIN_PASSWORD,
    LDAP_ADMIN_DN,
    LDAP_ADMIN_PASSWORD,
    LDAP_BASE,
    LDAP_SERVICE_DN,
    LDAP_SERVICE_PASSWORD,
    USERS,
)
from lab.launch import Server, claim, launch
from lab.tls import Certs
from lab.util import fresh_dir, make_traversable, mkdir, run, write


def ssha(password: str) -> str:
    """Return an LDAP {SSHA} hash of ``password``."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def ldap_ldif() -> str:
    """The lab's directory: base, People, Special Users (the service DN, Cyrus's admin) and one
    entry per user. Kolab's users are kolabInetOrgPerson; Debian ships no Kolab schema, so they
    are inetOrgPerson with the attributes Kolab's logins use (uid, mail, userPassword)."""
    entries = [
        f"dn: {LDAP_BASE}\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: Example Org\ndc: example\n",
        f"dn: ou=People,{LDAP_BASE}\nobjectClass: organizationalUnit\nou: People\n",
        f"dn: ou=Special Users,{LDAP_BASE}\nobjectClass: organizationalUnit\nou: Special Users\n",
        f"dn: {LDAP_SERVICE_DN}\nobjectClass: inetOrgPerson\nuid: kolab-service\n"
        f"cn: Kolab Service\nsn: Service\nuserPassword: {ssha(LDAP_SERVICE_PASSWORD)}\n",
        f"dn: uid={CYRUS_ADMIN},ou=Special Users,{LDAP_BASE}\nobjectClass: inetOrgPerson\n"
        f"uid: {CYRUS_ADMIN}\ncn: Cyrus Administrator\nsn: Administrator\n"
        f"userPassword: {ssha(CYRUS_ADMIN_PASSWORD)}\n",
    ]
    for n, (mail, password) in enumerate(USERS.items(), start=1):
        uid = mail.split("@")[0]
        entries.append(
            f"dn: uid={uid},ou=People,{LDAP_BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: User {n}\nsn: User{n}\ngivenName: User\nmail: {mail}\n"
            f"userPassword: {ssha(password)}\n")
    return "\n".join(entries)


def slapd_conf(cert: Path, key: Path, directory: Path, run_dir: Path | str) -> str:
    """slapd.conf of the lab directory: the database in ``directory``, pid and args files in ``run_dir``.

    Anonymous users can read only the root DSE and schema; bound users (the service DN, users)
    can read the tree; passwords are only usable for binding.
    """
    return f"""\
include   /etc/ldap/schema/core.schema
include   /etc/ldap/schema/cosine.schema
include   /etc/ldap/schema/nis.schema
include   /etc/ldap/schema/inetorgperson.schema
pidfile   {run_dir}/slapd.pid
argsfile  {run_dir}/slapd.args
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
modulepath /usr/lib/ldap
moduleload back_mdb
database  mdb
maxsize   104857600
suffix    "{LDAP_BASE}"
rootdn    "{LDAP_ADMIN_DN}"
rootpw    {ssha(LDAP_ADMIN_PASSWORD)}
directory {directory}
index     objectClass eq
index     uid,mail eq
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by anonymous auth
"""


def load_directory(name: str, conf: Path, ldif: Path, log: Path | None = None) -> None:
    """Check ``conf`` and load the lab's entries (written to ``ldif``) into its database offline."""
    write(ldif, ldap_ldif(), 0o600)
    run(name, ["slaptest", "-u", "-f", str(conf)], log=log)
    run(name, ["slapadd", "-q", "-f", str(conf), "-l", str(ldif)], log=log)


def start_slapd(root: Path, certs: Certs, cert: str = "good", host: str = "127.0.0.1") -> Server:
    """Start slapd (ldap with StartTLS, ldaps) with the lab directory loaded by slapadd (access
    rules: slapd_conf)."""
    cert_file, key_file = certs.pair(cert)
    name = "slapd" if cert == "good" else f"slapd-{cert}"
    d = mkdir(Path(root) / f"slapd-{cert}")
    make_traversable(d)
    claim(d, "slapd")
    db = fresh_dir(d / "db")
    db.chmod(0o700)
    out = d / "slapd.log"
    out.write_text("")
    conf = write(d / "slapd.conf", slapd_conf(cert_file, key_file, db, d), 0o600)
    load_directory(name, conf, d / "base.ldif", log=out)

    def prepare(ports: dict[str, int]) -> list[str]:
        urls = f"ldap://{host}:{ports['ldap']}/ ldaps://{host}:{ports['ldaps']}/"
        # "-d none": stay in the foreground, log only errors (to the log file)
        return ["slapd", "-d", "none", "-f", str(conf), "-h", urls]

    return launch(name, d, host, ["ldap", "ldaps"], prepare, [out])

