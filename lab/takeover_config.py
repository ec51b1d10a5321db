"""kolabmon-takeover's config for the lab cluster: what an admin writes, with lab paths.

Used by the tests, the takeover benchmark and the demo. The handler runs on the monitoring host
(the `monitor` namespace, where the cluster IP is reachable); the cluster's commands run on the
nodes through `lab/on {node}`, the per-node command prefix (docs/design.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from lab import cluster, servers

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
USER = "user1@example.org"


def imap_check(timeout: str = "5") -> list[str]:
    """check_kolab_imap as a mail user's client runs it on the cluster IP (STARTTLS, the lab CA, logged
    in as USER); the caller adds ``--password-file``."""
    return [str(BIN / "check_kolab_imap"), "-H", cluster.CLUSTER_IP, "--starttls", "--ca-file",
            str(cluster.make_certs().ca), "-u", USER, "-t", timeout]


def reprobes(config: Path) -> dict[str, list[str]]:
    """Each service's reprobe argv from a config `write` made (the checks Icinga runs)."""
    import tomllib

    return {name: table["reprobe"] for name, table in tomllib.loads(config.read_text())["services"].items()}


def write(directory: Path, *, cooldown: float = 600, soft_attempt: int = 0, fence: bool = False,
          move: str = "attribute", transition_timeout: float = 120, on_node: bool = False,
          name: str = "takeover.toml", notify: list[str] | None = None) -> Path:
    """Write takeover.toml (and the probe's password file) into `directory`; return the config path.
    `on_node`: for a kolabmon-takeover that runs on a cluster node (an Icinga agent's handler), whose
    cluster tools run locally (no prefix). The watcher ignores prefixes anyway. `notify`: kolabmon-notify's
    argv for the takeover's own messages ([notify])."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "imap.pw"
    secret.write_text(servers.USERS[USER] + "\n")
    secret.chmod(0o600)
    ca = str(cluster.make_certs().ca)
    ip = cluster.CLUSTER_IP
    imap = [*imap_check("4"), "--password-file", str(secret)]
    # the same checks Icinga runs (kolab-smtp logs in: AUTH goes through saslauthd, and hangs with it)
    smtp = [str(BIN / "check_kolab_smtp"), "-H", ip, "--starttls", "--ca-file", ca, "-u", USER,
            "--password-file", str(secret), "-t", "4"]
    ldap = [str(BIN / "check_kolab_ldap"), "-H", ip, "-b", servers.LDAP_BASE, "-f", "(uid=user1)",
            "-D", servers.LDAP_SERVICE_DN, "--password-file", str(directory / "ldap.pw"), "-t", "8"]
    (directory / "ldap.pw").write_text(servers.LDAP_SERVICE_PASSWORD + "\n")
    (directory / "ldap.pw").chmod(0o600)
    storage = [str(BIN / "check_kolab_storage"), "--path", str(cluster.SHARED), "--fstype", "ext4", "-t", "8"]
    prefix = "" if on_node else f"{cluster.ON} {{node}}"
    config = directory / name
    config.write_text(f"""# kolabmon-takeover for the lab cluster ({cluster.CLUSTER_NAME})
cluster = "kolab-cluster"
hosts = ["kolab-cluster", "node1", "node2"]
group = "{cluster.GROUP}"
attribute = "{cluster.DEGRADED_ATTRIBUTE}"
move = "{move}"
fence = {str(fence).lower()}
cooldown = {cooldown}
soft_attempt = {soft_attempt}
transition_timeout = {transition_timeout}
probe_timeout = 10
state_dir = "{directory}"

[nodes.node1]
prefix = "{prefix}"
[nodes.node2]
prefix = "{prefix}"

[services.imap]
reprobe = {json.dumps(imap)}
[services.smtp]
reprobe = {json.dumps(smtp)}
[services.ldap]
reprobe = {json.dumps(ldap)}
[services.storage]
reprobe = {json.dumps(storage)}
on = "active"
# a read-only or failing spool makes the stops on it fail (Postfix exits 1): Pacemaker would fence
# after that anyway, seconds later
fence_first = "always"
""" + (f"""
[notify]
command = {json.dumps(notify)}
""" if notify else ""))
    return config
