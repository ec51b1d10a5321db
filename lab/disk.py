"""The lab cluster's shared disk: an ext4 image on a loop device, mounted only inside the active
node, holding every service's config and data. Its content is written to LAB_DIR/seed with the same
config writers as the single-host servers (lab/dovecot.py, slapd.py, postfix.py, nginx.py) and
copied into the image by ``mkfs.ext4 -d``. Also the cluster's certificates."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from lab import dovecot, nginx, postfix, seed, slapd, tls
from lab.accounts import LAB_DOMAIN, MAIL_UID, USERS
from lab.topology import (
    CERT_SAN,
    CLUSTER_IP,
    IMAGE,
    IMAGE_SIZE,
    LAB_DIR,
    NODELOG,
    PORTS,
    RUN,
    SEED_MESSAGES,
    SHARED,
    USER1,
    attempt,
)
from lab.util import fresh_dir, mkdir, run, write


def make_certs() -> tls.Certs:
    """The lab's certificates under LAB_DIR/tls, with the cluster IP and node IPs in the SANs."""
    return tls.make_certs(LAB_DIR, san=CERT_SAN)


def _seed_maildir(home: Path, user: str, count: int) -> None:
    """Put ``count`` messages into ``user``'s new Maildir INBOX under ``home`` (uid MAIL_UID)."""
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, mode=0o700)
    now = time.time()
    for i in range(1, count + 1):
        path = maildir / "new" / f"{int(now)}.M{i}P{os.getpid()}.kolab"
        path.write_bytes(seed.seed_message(user, i).as_bytes())
        path.chmod(0o600)
    for path in [home, *home.rglob("*")]:
        os.chown(path, MAIL_UID, MAIL_UID)
    home.chmod(0o700)


def _make_seed(certs: tls.Certs) -> Path:
    """Write every config and the initial data of the shared disk into LAB_DIR/seed."""
    seed = fresh_dir(LAB_DIR / "seed")
    d = mkdir(seed / "dovecot")
    mkdir(d / "state")
    mail = mkdir(d / "mail")
    os.chown(mail, MAIL_UID, MAIL_UID)
    for user in USERS:
        home = mail / user
        home.mkdir()
        _seed_maildir(home, user, SEED_MESSAGES if user == USER1 else 0)
    dovecot.write_users(d / "users", SHARED / "dovecot" / "mail")
    ports = {k: PORTS[k] for k in ("imap", "imaps", "lmtp", "auth")}
    # base_dir is Debian's default, in the node's private /run: the stock agent runs `dovecot process
    # status` without -c (Dovecot 2.4, lab/release.py), which looks for /run/dovecot/master
    conf = write(d / "dovecot.conf", dovecot.dovecot_conf(
        SHARED / "dovecot", CLUSTER_IP, ports, certs.cert, certs.key, "cluster",
        base_dir=Path("/run/dovecot"), log_path=NODELOG / "dovecot.log"))
    run("dovecot", ["dovecot", "-n", "-c", str(conf)])

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
    main = postfix.main_cf(SHARED / "postfix", CLUSTER_IP, (CLUSTER_IP, PORTS["lmtp"]),
                           postfix.dovecot_sasl(CLUSTER_IP, PORTS["auth"]), certs.cert, certs.key, NODELOG / "maillog",
                           f"kolab.{LAB_DOMAIN}", peername_lookup=False)
    postfix.write_config(etc, main, postfix.master_cf(CLUSTER_IP, PORTS))

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
