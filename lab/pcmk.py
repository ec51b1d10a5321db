"""Pacemaker and Corosync in the lab cluster: corosync.conf, the CIB (resources, fencing, the admin's
one-time setup for kolabmon's takeover), each node's state directories, and reading crm_mon's XML
through kolabmon's own reader (kolabmon/pacemaker.py).

Corosync runs two knet links, link 0 on the interconnect (preferred) and link 1 on the LAN.
Pacemaker runs the stonith device ``fence-lab`` and one group ``kolab``: Filesystem (a loop-device
ext4, the shared storage) -> IPaddr2 -> slapd -> saslauthd -> Cyrus IMAP -> postfix -> nginx
(free/busy), with the stock agents and, for saslauthd and Cyrus, the project's own (kolabmon/ocf).
Configs and data live on the shared storage, pid files and sockets in the node's private /run, logs
in the node's own log directory.

The admin's one-time setup that kolabmon's takeover relies on is part of the configuration
(in crm shell terms)::

    crm configure property stonith-enabled=true stonith-action=off
    crm configure rsc_defaults resource-stickiness=100
    crm configure location kolab-avoid-degraded kolab rule -inf: kolab-degraded eq true

so ``crm_attribute -N NODE -n kolab-degraded -v true -l reboot`` moves the group off NODE, and
the attribute disappears when the node restarts or is fenced.
"""

from __future__ import annotations

import functools
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import quoteattr

from kolabmon import pacemaker
from lab.accounts import LDAP_ADMIN_DN, LDAP_ADMIN_PASSWORD
from lab.topology import (
    ADMIN_IPS,
    CLUSTER_IP,
    CLUSTER_NAME,
    DEGRADED_ATTRIBUTE,
    FENCE_DEVICE,
    GROUP,
    GROUP_MEMBERS,
    INTERCONNECT_IPS,
    LAB_DIR,
    LOGS,
    NODE_IDS,
    NODELOG,
    NODES,
    PDU_SOCKET,
    PORTS,
    SASL_RUN,
    SERVICE_PIDFILES,
    SHARED,
)
from lab.util import LabError, fresh_dir, run, write

# ---- timing knobs (lab values, and what they cost) ---------------------------------------------
# corosync token: a node that stops answering is declared lost after token + consensus
# (1.2 x token) = 2.2 s, then fenced (default token 3000 ms: 6.6 s). knet pings every token/4 and
# declares a link dead after token/2 = 0.5 s, so a cut interconnect falls back to the LAN link
# long before the token is lost. Shorter would risk false membership losses on a loaded 2-core box.
TOKEN_MS = 1000
# dc-deadtime: only at start-up, how long a starting node waits for an existing DC before it holds
# its own election (default 20 s, most of a default bring-up). No effect on failure detection;
# too short only costs an extra election when the peer is slow to start.
DC_DEADTIME = "2s"
# Fencing delay so that a full partition has one winner: fencing OF node1 waits 2 s, so node1
# shoots first and survives. Cost: every fencing of node1 (crash, failed stop on node1) is 2 s later.
FENCE_DELAY = "node1:2s"
MONITOR_INTERVAL = "10s"

# Release differences that need nothing per release (Debian 12: Pacemaker 2.1.5, corosync 3.1.7,
# Cyrus 3.6; Debian 13: Pacemaker 3.0.0, corosync 3.1.9, crmsh 5, Cyrus 3.10; lab/release.py
# has the ones that do):
# - CIB schema (validate-with pacemaker-3.9 vs 4.0): the CIB is built on `cibadmin --empty` of the
#   installed Pacemaker and checked with crm_verify, so the schema always matches; only plain
#   primitives/group/location rule/rsc_defaults are used, valid in both. crmsh is not needed.
# - pacemakerd -f: "ignored" in 2.1, so node-run.sh starts plain `pacemakerd`.
# - crm_mon XML: the lab reads it through kolabmon/pacemaker.py, the product's own reader, which
#   handles what differs between api-version 2.25 and 2.38.
# - stonith-action: "off" (3.0 dropped "poweroff").
# - Pacemaker 3.0's fencer registers the device only if the CIB it first reads lists its node:
#   the CIB lists both nodes from the start, and `up`/`restore` wait for the registration.


@functools.lru_cache(maxsize=1)
def pacemaker_version() -> tuple[int, int]:
    """(major, minor) of the installed Pacemaker, from `pacemakerd --version`."""
    out = run("pacemaker", ["pacemakerd", "--version"])
    word = out.split()[1] if len(out.split()) > 1 else "0.0"
    major, minor = (word.split(".") + ["0"])[:2]
    return int(major), int(minor)


# ---------------------------------------------------------------------------------------------
# configuration


def _corosync_conf() -> str:
    nodes = "".join(f"""\
    node {{
        name: {node}
        nodeid: {NODE_IDS[node]}
        ring0_addr: {INTERCONNECT_IPS[node]}
        ring1_addr: {ADMIN_IPS[node]}
    }}
""" for node in NODES)
    return f"""\
# kolabmon lab (lab/cluster.py). Link 0 = private interconnect (hb, 10.98.0.0/24), link 1 = LAN.
totem {{
    version: 2
    cluster_name: {CLUSTER_NAME}
    transport: knet
    crypto_cipher: none
    crypto_hash: none
    # lost node declared after token + consensus = {TOKEN_MS / 1000 * 2.2:.1f} s (default 3000 ms: 6.6 s);
    # knet: a link is dead after token/2 = {TOKEN_MS // 2} ms without pongs (pings every token/4)
    token: {TOKEN_MS}
    # passive: all traffic on the live link with the highest priority (the interconnect)
    link_mode: passive
    interface {{
        linknumber: 0
        knet_link_priority: 10
    }}
    interface {{
        linknumber: 1
        knet_link_priority: 5
    }}
}}
logging {{
    to_stderr: no
    to_logfile: yes
    logfile: /var/log/corosync/corosync.log
    to_syslog: no
    timestamp: on
}}
quorum {{
    provider: corosync_votequorum
    two_node: 1
}}
nodelist {{
{nodes}}}
"""


def nvpairs(owner: str, pairs: dict[str, str]) -> str:
    return "".join(f'<nvpair id="{owner}-{name}" name="{name}" value={quoteattr(value)}/>'
                   for name, value in pairs.items())


def primitive(rid: str, agent: str, params: dict[str, str], timeouts: tuple[str, str, str] | None
               = ("20s", "30s", "30s")) -> str:
    """A <primitive>: agent "ocf:heartbeat:X" or "stonith:X"; timeouts (monitor, start, stop)."""
    cls, _, rest = agent.partition(":")
    provider, _, kind = rest.rpartition(":")
    prov = f' provider="{provider}"' if provider else ""
    ops = ""
    if timeouts:
        monitor, start, stop = timeouts
        interval = "60s" if cls == "stonith" else MONITOR_INTERVAL
        ops = (f'<operations><op id="{rid}-monitor" name="monitor" interval="{interval}" timeout="{monitor}"/>'
               f'<op id="{rid}-start" name="start" interval="0s" timeout="{start}"/>'
               f'<op id="{rid}-stop" name="stop" interval="0s" timeout="{stop}"/></operations>')
    return (f'<primitive id="{rid}" class="{cls}"{prov} type="{kind}">'
            f'<instance_attributes id="{rid}-params">{nvpairs(rid + "-params", params)}</instance_attributes>'
            f"{ops}</primitive>")


def _cib_configuration(loopdev: str) -> str:
    """The cluster's whole configuration as CIB XML (crm_config, resources, constraints, rsc_defaults)."""
    props = {"stonith-enabled": "true", "stonith-action": "off", "stonith-timeout": "60s",
             "dc-deadtime": DC_DEADTIME, "cluster-name": CLUSTER_NAME}
    fence = primitive(FENCE_DEVICE, "stonith:fence_labns", {
        "pcmk_host_list": " ".join(NODES), "pcmk_delay_base": FENCE_DELAY,
        "pdu_socket": str(PDU_SOCKET)}, ("20s", "20s", "20s"))
    members = [
        primitive("fs", "ocf:heartbeat:Filesystem", {
            "device": loopdev, "directory": str(SHARED), "fstype": "ext4"}, ("40s", "60s", "60s")),
        primitive("vip", "ocf:heartbeat:IPaddr2", {
            "ip": CLUSTER_IP, "cidr_netmask": "24", "nic": "eth0"}),
        primitive("ldap", "ocf:heartbeat:slapd", {
            "config": f"{SHARED}/ldap/slapd.conf", "pidfile": SERVICE_PIDFILES["slapd"],
            "services": f"ldap://{CLUSTER_IP}:{PORTS['ldap']}/ ldaps://{CLUSTER_IP}:{PORTS['ldaps']}/",
            # the RA's monitor searches each suffix; the rootdn has no blank (the RA does not quote it)
            "bind_dn": LDAP_ADMIN_DN, "password": LDAP_ADMIN_PASSWORD}),
        # Kolab's IMAP stack, with the project's agents (kolabmon/ocf): logins through saslauthd
        primitive("sasl", "ocf:kolabmon:saslauthd", {
            "config": f"{SHARED}/saslauthd/saslauthd.conf", "socket_dir": str(SASL_RUN)}),
        # monitor at depth 0 (the master process): a hung imapd is for kolabmon to catch
        primitive("imap", "ocf:kolabmon:cyrus-imapd", {
            "config": f"{SHARED}/cyrus/imapd.conf", "cyrus_conf": f"{SHARED}/cyrus/cyrus.conf",
            "pidfile": SERVICE_PIDFILES["cyrus"], "imap_address": f"{CLUSTER_IP}:{PORTS['imap']}"}),
        primitive("smtp", "ocf:heartbeat:postfix", {"config_dir": f"{SHARED}/postfix/etc"}),
        primitive("web", "ocf:heartbeat:nginx", {
            "httpd": "/usr/sbin/nginx", "configfile": f"{SHARED}/nginx/conf/nginx.conf",
            "options": f"-p {SHARED}/nginx/ -e {NODELOG}/nginx-error.log"}),
    ]
    return f"""\
<crm_config><cluster_property_set id="cib-bootstrap-options">{nvpairs("opt", props)}</cluster_property_set></crm_config>
<resources>{fence}<group id="{GROUP}">{"".join(members)}</group></resources>
<constraints>
  <rsc_location id="kolab-avoid-degraded" rsc="{GROUP}">
    <rule id="kolab-avoid-degraded-rule" score="-INFINITY">
      <expression id="kolab-avoid-degraded-expr" attribute="{DEGRADED_ATTRIBUTE}" operation="eq" value="true"/>
    </rule>
  </rsc_location>
  <!-- first placement on node1 (the partition winner); below the stickiness, so no fail-back -->
  <rsc_location id="kolab-prefers-node1" rsc="{GROUP}" node="node1" score="50"/>
</constraints>
<rsc_defaults><meta_attributes id="rsc-options">{nvpairs("rsc-options", {"resource-stickiness": "100"})}\
</meta_attributes></rsc_defaults>
"""


def make_cib(loopdev: str) -> Path:
    """A complete CIB for the installed Pacemaker, verified offline, at nodes/cib.xml."""
    cib = ET.fromstring(run("cib", ["cibadmin", "--empty"]))
    conf = cib.find("configuration")
    if conf is None:
        raise LabError("cib: `cibadmin --empty` printed no <configuration>")
    wanted = ET.fromstring(f"<configuration>{_cib_configuration(loopdev)}</configuration>")
    for section in list(wanted):
        old = conf.find(section.tag)
        if old is not None:
            conf.remove(old)
        conf.append(section)
    path = LAB_DIR / "nodes" / "cib.xml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(ET.tostring(cib, encoding="unicode") + "\n")
    run("cib", ["crm_verify", "--xml-file", str(path)])
    # Then both nodes, so that the CIB each node first reads lists them: Pacemaker 3.0's fencer
    # decides once, from that CIB, whether the local node may run the fence device, and a node not
    # yet in <nodes> may not ("Ignoring fencing device ... because local node is not allowed to run
    # it"). (Not verified with them: offline, crm_verify takes nodes without status for unclean.)
    nodes = conf.find("nodes")
    if nodes is None:
        nodes = ET.SubElement(conf, "nodes")
    for node in NODES:
        ET.SubElement(nodes, "node", id=str(NODE_IDS[node]), uname=node)
    path.write_text(ET.tostring(cib, encoding="unicode") + "\n")
    return path


def make_node_dirs(cib: Path) -> None:
    """nodes/NODE/{lib-pacemaker,lib-corosync,etc-corosync,etc-postfix} and logs/NODE/*."""
    for node in NODES:
        d = fresh_dir(LAB_DIR / "nodes" / node)
        lib = d / "lib-pacemaker"
        for sub in ("cib", "pengine", "blackbox", "cores"):
            (lib / sub).mkdir(parents=True, mode=0o750)
        shutil.copyfile(cib, lib / "cib" / "cib.xml")  # no .sig: Pacemaker accepts it unsigned
        (lib / "cib" / "cib.xml").chmod(0o600)
        for sub in ("lib-corosync", "etc-corosync"):
            (d / sub).mkdir()
        write(d / "etc-corosync" / "corosync.conf", _corosync_conf())
        # ocf:heartbeat:postfix needs the shared config dir listed in the DEFAULT main.cf
        shutil.copytree("/etc/postfix", d / "etc-postfix", symlinks=True)
        run("postfix", ["postconf", "-c", str(d / "etc-postfix"), "-e",
                        f"alternate_config_directories = {SHARED}/postfix/etc"])
        logs = LOGS / node
        for sub in ("pacemaker", "corosync", "services"):
            (logs / sub).mkdir(parents=True, exist_ok=True)
        (logs / "services").chmod(0o1777)
        for path in [lib, *lib.rglob("*"), logs / "pacemaker"]:
            shutil.chown(path, "hacluster", "haclient")
    for mountpoint in (SHARED, NODELOG):
        mountpoint.mkdir(exist_ok=True)


# ---------------------------------------------------------------------------------------------
# reading crm_mon (kolabmon's reader; the lab adds only what it waits for)


def read_status(xml: str) -> pacemaker.Status:
    """``crm_mon --output-as=xml`` as kolabmon reads it; LabError if it is not crm_mon's XML."""
    try:
        return pacemaker.parse(xml)
    except (ValueError, pacemaker.StackDown) as exc:
        raise LabError(f"crm_mon: {exc}") from exc


def online_nodes(status: pacemaker.Status) -> list[str]:
    """The nodes crm_mon lists as online."""
    return [n.name for n in status.nodes if n.online]


def group_node(status: pacemaker.Status) -> str | None:
    """The node on which every member of GROUP is Started (and none failed), else None."""
    return status.group_node(GROUP) if len(status.group(GROUP)) == len(GROUP_MEMBERS) else None


def describe(status: pacemaker.Status) -> str:
    """DC, quorum, online nodes and where each member of GROUP is, on one line."""
    members = ", ".join(f"{m.id} {m.role}{'!' if m.failed else ''}@{'+'.join(m.nodes) or '-'}"
                        for m in status.group(GROUP))
    return (f"DC {status.dc or '?'} quorum={'yes' if status.quorate else 'no'}, "
            f"online [{' '.join(online_nodes(status))}], group: {members or 'none'}")


def pcmk_tail(lines: int = 4) -> str:
    """The last error/warning lines of each node's pacemaker.log, as one line."""
    parts = []
    for node in NODES:
        try:
            text = (LOGS / node / "pacemaker" / "pacemaker.log").read_text(errors="replace")
        except OSError:
            continue
        hits = [line.strip() for line in text.splitlines()
                if any(word in line for word in (" error: ", " crit: ", "warning: Unexpected result",
                                                 "ocf-exit-reason", "Result of start", "Result of stop"))]
        if hits:
            parts.append(f"{node}: " + " | ".join(hit[-220:] for hit in hits[-lines:]))
    return " || ".join(parts) or "(no errors in the pacemaker logs)"
