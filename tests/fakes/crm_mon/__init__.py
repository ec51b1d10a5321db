"""Fake cluster tools for faults the lab cluster cannot (or should not) produce on demand:
split brain (fencing on prevents it), the group on chosen nodes (`group_on`), a node fenced at a
chosen time (`fenced`), and a crm_mon that is missing, fails, hangs or prints malformed or
truncated XML. `install(directory, behaviour)` writes executables there; the test puts that
directory first on the plugin's PATH. `install_prefix` writes a per-node command prefix for which
one node is down, as lab/on and ssh report it."""

from __future__ import annotations

import sys
import time
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


def fenced(node: str, client: str, completed: float) -> str:
    """The survivor's crm_mon after `node` was fenced at `completed` (epoch) at the request of `client`
    ("stonith_admin.PID": kolabmon's takeover; "pacemaker-controld.PID": Pacemaker itself): SPLIT_BRAIN's
    cluster with `node` offline and the group on the other node, and a fence history as Pacemaker 2.1
    writes it (fence-event-2.15.rng), with a failed attempt before and an older fence of the same node."""
    other = "node2" if node == "node1" else "node1"
    root = ET.fromstring(group_on(other))
    for element in root.iterfind("nodes/node"):
        down = element.get("name") == node
        element.set("online", "false" if down else "true")
        element.set("is_dc", "false" if down else "true")
    dc = root.find("summary/current_dc")
    assert dc is not None
    dc.set("name", other)

    def event(status: str, at: float, by: str) -> ET.Element:
        return ET.Element("fence_event", {
            "action": "reboot", "target": node, "client": by, "origin": other, "status": status,
            **({"exit-reason": "fence agent did not answer"} if status == "failed" else {"delegate": other}),
            "completed": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))})

    history = ET.Element("fence_history")  # crm_mon lists the newest first
    history.extend([event("success", completed, client), event("failed", completed - 10, client),
                    event("success", completed - 3 * 86400, "pacemaker-controld.1207")])
    root.insert(len(root) - 1, history)  # before <status>, the last element
    return ET.tostring(root, encoding="unicode")


def install_prefix(directory: Path, tools: Path, *down: str) -> str:
    """A per-node command prefix (`PATH {node}`, returned) that says a node in `down` is down on stderr and exits
    255, as lab/on does for a fenced node, and runs the command on any other node with `tools` first on its PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    _script(directory / "on", f"""import os
import sys
node, argv = sys.argv[1], sys.argv[2:]
if node in {down!r}:
    sys.stderr.write(f"on: {{node}} is down (powered off or fenced)\\n")
    sys.exit(255)
os.environ["PATH"] = {str(tools)!r} + ":" + os.environ["PATH"]
os.execvp(argv[0], argv)
""")
    return f"{directory / 'on'} {{node}}"
