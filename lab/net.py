"""The lab cluster's network: namespaces, the LAN bridge br0 (client LAN 10.99.0.0/24) and the
interconnect bridge br1 (10.98.0.0/24), veths and addresses, and cutting or healing links.

Nothing of the root namespace's network is touched: every link is created inside the namespaces.
"""

from __future__ import annotations

from lab.topology import INTERCONNECT_IPS, LAN_IPS, NAMESPACES, NODES, RUN, attempt
from lab.util import run


def netns_list() -> set[str]:
    """Every network namespace on the host (ip netns list)."""
    out = attempt(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def recorded_namespaces() -> list[str]:
    """The namespaces this lab recorded as made by it."""
    try:
        return [n for n in (RUN / "namespaces").read_text().split() if n in NAMESPACES]
    except OSError:
        return []


def lab_namespaces() -> set[str]:
    """The lab's namespaces that exist on the host."""
    return netns_list() & set(NAMESPACES)


def make_network() -> None:
    """Namespaces, the LAN and interconnect bridges, veths and addresses."""
    for ns in NAMESPACES:
        with (RUN / "namespaces").open("a") as fh:  # recorded first: down removes half-made ones
            fh.write(ns + "\n")
        run("network", ["ip", "netns", "add", ns])
        run("network", ["ip", "-n", ns, "link", "set", "lo", "up"])
    for ns, bridge in (("lan", "br0"), ("hb", "br1")):
        run("network", ["ip", "-n", ns, "link", "add", bridge, "type", "bridge"])
        run("network", ["ip", "-n", ns, "link", "set", bridge, "up"])
    links = [("lan", "br0", "eth0", host, ip) for host, ip in LAN_IPS.items()]
    links += [("hb", "br1", "eth1", node, ip) for node, ip in INTERCONNECT_IPS.items()]
    for ns, bridge, dev, host, ip in links:
        port = f"p-{host}"
        # created directly inside the namespaces: no interface of the root namespace is touched
        run("network", ["ip", "link", "add", dev, "netns", host, "type", "veth", "peer", "name", port,
                        "netns", ns])
        run("network", ["ip", "-n", ns, "link", "set", port, "master", bridge])
        run("network", ["ip", "-n", ns, "link", "set", port, "up"])
        run("network", ["ip", "-n", host, "addr", "add", f"{ip}/24", "dev", dev])
        run("network", ["ip", "-n", host, "link", "set", dev, "up"])


def set_interconnect(state: str) -> None:
    """Take the nodes' ports on the interconnect bridge "down" or "up"."""
    for node in NODES:
        run("fault", ["ip", "-n", "hb", "link", "set", f"p-{node}", state])


def set_lan_port(host: str, state: str) -> None:
    """Take a machine's port on the LAN bridge "down" or "up" (its own interface stays as it is)."""
    run("fault", ["ip", "-n", "lan", "link", "set", f"p-{host}", state])


def isolate_on_lan(isolated: bool) -> None:
    """Isolated bridge ports reach the client and monitor, not each other."""
    for node in NODES:
        run("fault", ["bridge", "-n", "lan", "link", "set", "dev", f"p-{node}", "isolated",
                      "on" if isolated else "off"])
