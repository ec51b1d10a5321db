"""The lab PDU: a small daemon in the root namespaces (``python lab/cluster.py pdu``, started by up)
that powers the lab's nodes on and off, its client, and the fence agent that uses it.

``fence_labns`` (lab/fence/, installed as /usr/sbin/fence_labns while the lab is up) asks the PDU to
power a node off: SIGKILL the node's namespace PID 1 (every process of the node dies, its mount
namespace and so the ext4 mount go with it), take its links down and drop the cluster IP from its
netns. The PDU also powers nodes on (up, restore, a fence "reboot").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time

from lab import nodes
from lab.topology import CLUSTER_PY, FENCE_AGENT, FENCE_AGENT_SOURCE, LOGS, NODES, PDU_SOCKET, phase
from lab.util import LabError, tail


def serve_pdu() -> None:
    """Run the lab PDU on LAB_DIR/pdu.sock until SIGTERM. One line per request -> one line answer:
    ``ping`` | ``list`` | ``status NODE`` | ``off NODE`` | ``on NODE [DELAY_S]``."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    power = threading.Lock()

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {msg}", flush=True)

    def delayed_on(node: str, delay: float) -> None:
        time.sleep(delay)
        with power:
            log(f"delayed on {node}: {nodes.power_on(node, children)}")

    def answer(line: str) -> str:
        parts = line.split()
        act, node = (parts + ["", ""])[:2]
        if act == "ping":
            return "ok pdu alive"
        if act == "list":
            return "ok " + " ".join(NODES)
        if node not in NODES:
            return f"err unknown node {node!r}"
        if act == "status":
            return "ok " + ("on" if nodes.recorded(node) else "off")
        if act == "off":
            with power:
                return nodes.power_off(node)
        if act == "on":
            delay = float(parts[2]) if len(parts) > 2 else 0.0
            if delay > 0:  # "boot time": a rebooted node must not rejoin before its fencing is confirmed
                threading.Thread(target=delayed_on, args=(node, delay), daemon=True).start()
                return f"ok {node} will power on in {delay:.1f}s"
            with power:
                return nodes.power_on(node, children)
        return f"err unknown action {act!r}"

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline().decode(errors="replace").strip()
            try:
                reply = answer(line)
            except Exception as exc:  # one bad request must not kill the PDU
                reply = f"err {exc!r}"
            if not line.startswith(("ping", "status", "list")):
                log(f"request {line!r} -> {reply}")
            self.wfile.write((reply + "\n").encode())

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

        def service_actions(self) -> None:
            for proc in children.values():  # reap powered-off nodes
                proc.poll()

    PDU_SOCKET.unlink(missing_ok=True)
    server = Server(str(PDU_SOCKET), Handler)
    PDU_SOCKET.chmod(0o600)

    def terminate(*_: object) -> None:
        log("SIGTERM")
        os._exit(0)

    signal.signal(signal.SIGTERM, terminate)
    log(f"lab PDU listening on {PDU_SOCKET}, pid {os.getpid()}")
    server.serve_forever(poll_interval=0.5)


def pdu_request(request: str, timeout: float = 30.0) -> str:
    """Send one request line to the lab PDU; return its answer (LabError if it cannot be reached)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(PDU_SOCKET))
            sock.sendall((request + "\n").encode())
            return sock.makefile().readline().strip()
    except OSError as exc:
        raise LabError(f"pdu: cannot reach the lab PDU at {PDU_SOCKET}: {exc}") from exc


def start_pdu() -> int:
    """Start the lab PDU unless the recorded one runs; return its PID once it answers."""
    pid = nodes.recorded("pdu")
    if pid is None:
        with (LOGS / "pdu.log").open("ab") as out:
            proc = subprocess.Popen([sys.executable, str(CLUSTER_PY), "pdu"],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd="/")
        nodes.CHILDREN[proc.pid] = proc
        nodes.record("pdu", proc.pid)
        pid = proc.pid
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(LabError):
            if pdu_request("ping", timeout=2).startswith("ok"):
                return pid
        if not nodes.alive(pid) or time.monotonic() > deadline:
            raise LabError(f"pdu: lab PDU (pid {pid}) not answering [{tail(LOGS / 'pdu.log')}]")
        time.sleep(0.05)


def install_fence_agent() -> None:
    shutil.copyfile(FENCE_AGENT_SOURCE, FENCE_AGENT)
    FENCE_AGENT.chmod(0o755)


def remove_fence_agent() -> None:
    """Remove /usr/sbin/fence_labns if it is the lab's (an edited copy is left and reported)."""
    if not FENCE_AGENT.exists():
        return
    if FENCE_AGENT.read_bytes() == FENCE_AGENT_SOURCE.read_bytes():
        FENCE_AGENT.unlink()
    else:
        phase(f"WARNING {FENCE_AGENT} differs from {FENCE_AGENT_SOURCE}: left in place")
