"""The lab cluster's shared disk: an ext4 image on a loop device, mounted only inside the active
node, holding every service's config and data. Its content is written to LAB_DIR/seed with the same
config writers as the single-host servers (lab/cyrus.py, saslauthd.py, slapd.py, postfix.py, nginx.py) and
copied into the image by ``mkfs.ext4 -d``; the users' mailboxes are created, and user1's seed mail
delivered, on the running cluster as Kolab does it (``seed_mail``). Also the cluster's certificates."""

from __future__ import annotations

import imaplib
import shutil
import smtplib
from pathlib import Path

from lab import cyrus, nginx, postfix, saslauthd, slapd, tls
from lab.accounts import LAB_DOMAIN, USERS
from lab.seed import SEED_MESSAGES, deliver
from lab.topology import (
    CERT_SAN,
    CLUSTER_IP,
    CYRUS_RUN,
    IMAGE,
    IMAGE_SIZE,
    LAB_DIR,
    NODELOG,
    PORTS,
    RUN,
    SASL_RUN,
    SHARED,
    USER1,
    attempt,
)
from lab.util import LabError, fresh_dir, mkdir, run, write


def make_certs() -> tls.Certs:
    """The lab's certificates under LAB_DIR/tls, with the cluster IP and node IPs in the SANs."""
    return tls.make_certs(LAB_DIR, san=CERT_SAN)


def _make_seed(certs: tls.Certs) -> Path:
    """Write every config and the initial data of the shared disk into LAB_DIR/seed (the mailboxes
    and their seed mail are created on the running cluster: seed_mail)."""
    seed = fresh_dir(LAB_DIR / "seed")
    c = mkdir(seed / "cyrus")
    cyrus.make_store(c, certs.cert, certs.key)
    shared_c = SHARED / "cyrus"
    conf = write(c / "imapd.conf", cyrus.imapd_conf(
        shared_c, CYRUS_RUN, SASL_RUN / "mux", shared_c / "tls" / "cert.pem", shared_c / "tls" / "key.pem",
        "cluster"))
    write(c / "cyrus.conf", cyrus.cyrus_conf(shared_c / "imapd.conf", CLUSTER_IP, PORTS, CYRUS_RUN / "socket" / "lmtp"))
    cyrus.lint(conf)
    write(mkdir(seed / "saslauthd") / "saslauthd.conf",
          saslauthd.saslauthd_conf(f"ldap://{CLUSTER_IP}:{PORTS['ldap']}/"), 0o600)

    ldap = mkdir(seed / "ldap")
    db = mkdir(ldap / "db", 0o700)
    write(ldap / "slapd.conf", slapd.slapd_conf(certs.cert, certs.key, SHARED / "ldap" / "db", "/run/kolab-slapd"),
          0o600)
    # the offline load uses a copy that points at the seed and a scratch pid directory
    scratch = fresh_dir(LAB_DIR / "seed-scratch")
    load_conf = write(scratch / "slapd.conf", slapd.slapd_conf(certs.cert, certs.key, db, scratch), 0o600)
    slapd.load_directory("slapd", load_conf, scratch / "base.ldif")
    shutil.rmtree(scratch)

    p = mkdir(seed / "postfix")
    etc = mkdir(p / "etc")
    mkdir(p / "spool")
    shutil.chown(mkdir(p / "data"), "postfix", "postfix")
    main = postfix.main_cf(SHARED / "postfix", CLUSTER_IP, f"unix:{CYRUS_RUN}/socket/lmtp",
                           postfix.cyrus_sasl(SHARED / "postfix" / "etc"), certs.cert, certs.key, NODELOG / "maillog",
                           f"kolab.{LAB_DOMAIN}", peername_lookup=False)
    postfix.write_config(etc, main, postfix.master_cf(CLUSTER_IP, PORTS), saslauthd.smtpd_conf(SASL_RUN / "mux"))

    web = mkdir(seed / "nginx")
    conf_dir = mkdir(web / "conf")
    mkdir(web / "html" / "freebusy")
    shared_web = SHARED / "nginx"
    # no "daemon off;": ocf:heartbeat:nginx starts nginx and expects it to daemonize
    write(conf_dir / "nginx.conf", nginx.nginx_conf(
        CLUSTER_IP, PORTS, certs.cert, certs.key, shared_web / "html", shared_web / "conf" / "htpasswd",
        pid="/run/kolab-nginx.pid", error_log=NODELOG / "nginx-error.log",
        access_log=NODELOG / "nginx-access.log", temp="/run/kolab-nginx-", server_name=f"kolab.{LAB_DOMAIN}",
        foreground=False, health="ok $hostname"))
    nginx.write_htpasswd(conf_dir / "htpasswd")
    for user in USERS:
        nginx.write_freebusy(web, user)  # fresh DTSTAMP at every bring-up
    return seed


def make_shared_disk(certs: tls.Certs) -> str:
    """Create the ext4 image from the seed, attach it to a loop device, record it; return the device."""
    seed = _make_seed(certs)
    IMAGE.unlink(missing_ok=True)
    run("shared disk", ["truncate", "-s", IMAGE_SIZE, str(IMAGE)])
    run("shared disk", ["mkfs.ext4", "-q", "-F", "-L", "kolabshared", "-d", str(seed), str(IMAGE)])
    shutil.rmtree(seed)
    device = run("shared disk", ["losetup", "--find", "--show", str(IMAGE)]).strip()
    (RUN / "loopdev").write_text(device + "\n")
    return device


def loop_devices() -> list[str]:
    """Loop devices backed by the lab image (whatever was recorded)."""
    if not IMAGE.exists():
        return []
    out = attempt(["losetup", "--associated", str(IMAGE), "--noheadings", "--output", "NAME"]).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def seed_mail() -> str:
    """Inside the active node: create the users' mailboxes as Cyrus's admin and deliver user1's seed
    messages over Cyrus's LMTP socket, unless its INBOX has them; say what was done."""
    cyrus.create_mailboxes(CLUSTER_IP, PORTS["imap"], list(USERS))
    try:
        with imaplib.IMAP4(CLUSTER_IP, PORTS["imap"], timeout=10) as conn:
            conn.login(USER1, USERS[USER1])
            typ, data = conn.select("INBOX", readonly=True)
            count = int(data[0] or 0) if typ == "OK" else 0
        missing = range(count + 1, SEED_MESSAGES + 1)
        deliver(CYRUS_RUN / "socket" / "lmtp", USER1, missing)
    except (OSError, ValueError, imaplib.IMAP4.error, smtplib.SMTPException) as exc:
        raise LabError(f"seed mail for {USER1}: {type(exc).__name__}: {exc}") from exc
    return (f"mailboxes of {', '.join(USERS)} there, {len(missing)} of {SEED_MESSAGES} seed messages "
            f"delivered to {USER1}")
