"""Fake cluster tools for faults the lab cluster cannot (or should not) produce on demand:
split brain (fencing on prevents it), the group on chosen nodes (`group_on`), and a crm_mon that
is missing, fails, hangs or prints malformed or truncated XML. `install(directory, behaviour)`
writes executables there; the test puts that directory first on the plugin's PATH."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).parent
SPLIT_BRAIN = HERE / "split-brain.xml"
NOT_CONNECTED = """<pacemaker-result api-version="2.25" request="crm_mon -1 --output-as=xml">
  <status code="102" message="Not connected">
    <errors><error>crm_mon: Connection to cluster failed: Connection refused</error></errors>
  </status>
</pacemaker-result>
"""
CMAP_STATS = """stats.knet.node1.link0.connected (u8) = 1
stats.knet.node2.link0.connected (u8) = 1
stats.knet.node2.link1.connected (u8) = 1
"""
CMAP = """nodelist.node.0.name (str) = node1
nodelist.node.0.nodeid (u32) = 1
nodelist.node.1.name (str) = node2
nodelist.node.1.nodeid (u32) = 2
runtime.votequorum.this_node_id (u32) = 1
"""


def group_on(*nodes: str) -> str:
    """SPLIT_BRAIN's cluster with the kolab group running on `nodes` only (none: stopped everywhere)."""
    root = ET.fromstring(SPLIT_BRAIN.read_text())
    for resource in root.iterfind("resources/group/resource"):
        for node in resource.findall("node"):
            if node.get("name") not in nodes:
                resource.remove(node)
        resource.set("nodes_running_on", str(len(nodes)))
        if not nodes:
            resource.set("role", "Stopped")
            resource.set("active", "false")
    return ET.tostring(root, encoding="unicode")


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


def install(directory: Path, crm_mon: str, exit_code: int = 0, hang: bool = False) -> Path:
    """Fake crm_mon printing `crm_mon` (text) with `exit_code`, or hanging; plus healthy corosync tools."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "crm_mon.out").write_text(crm_mon)
    hang_line = "import time; time.sleep(3600)\n" if hang else ""
    out = str(directory / "crm_mon.out")
    _script(directory / "crm_mon",
            f"{hang_line}import sys\nsys.stdout.write(open({out!r}).read())\nsys.exit({exit_code})\n")
    _script(directory / "corosync-cmapctl",
            f"import sys\nsys.stdout.write({CMAP_STATS!r} if '-m' in sys.argv else {CMAP!r})\n")
    _script(directory / "crmadmin", "print('Controller on node1 in state S_IDLE: ok')\n")
    return directory
