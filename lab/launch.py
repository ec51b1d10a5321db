"""Starting and stopping the single-host lab servers: free loopback ports, one session per server,
readiness, and stopping exactly the processes the lab started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lab.util import LabError, comm, tail

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

# comm name of the recorded PID per server kind, checked before signalling a PID we did not spawn
_COMM = {"dovecot": "dovecot", "slapd": "slapd", "postfix": "master", "nginx": "nginx",
         "dnsmasq": "dnsmasq", "cyrus": "master", "saslauthd": "saslauthd"}
_STOP_SIGNAL = {"slapd": signal.SIGINT}
# Popen objects of servers started by this process (to reap them)
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# ---------------------------------------------------------------------------------------------
# ports


def _free_ports(count: int, host: str = "127.0.0.1", udp: bool = False) -> list[int]:
    """Return ``count`` distinct free TCP ports on ``host`` (also free for UDP if ``udp``)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind((host, 0))
            held.append(tcp)
            port = tcp.getsockname()[1]
            if udp:
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
                finally:
                    probe.close()
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def free_port(host: str = "127.0.0.1", udp: bool = False) -> int:
    """Return a currently free TCP port on ``host`` (bind port 0 and read it back)."""
    return _free_ports(1, host, udp)[0]


def _connect_once(host: str, port: int, banner: bytes | None, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if banner is None:
                return True
            sock.settimeout(timeout)
            data = b""
            while len(data) < len(banner):
                chunk = sock.recv(1024)
                if not chunk:
                    return False
                data += chunk
            return data.startswith(banner)
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = READY_TIMEOUT, banner: bytes | None = None,
              name: str | None = None) -> None:
    """Wait until ``host:port`` accepts connections (and greets with ``banner``).

    Raises LabError naming the server (``name``, else ``host:port``) on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if _connect_once(host, port, banner, min(1.0, timeout)):
            return
        if time.monotonic() >= deadline:
            what = f" with banner {banner!r}" if banner else ""
            raise LabError(f"{name or 'server'}: {host}:{port} not ready{what} after {timeout} s")
        time.sleep(0.05)



# ---------------------------------------------------------------------------------------------
# processes


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], pgid [2], sid [3])."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (reaps our own children)."""
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        return False
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _session_members(sid: int) -> list[int]:
    """Live PIDs whose session id is ``sid`` (our servers each run in their own session)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[3] == str(sid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _listen_inodes(host: str, port: int, udp: bool = False) -> set[str]:
    """Socket inodes listening on IPv4 ``host:port`` (TCP LISTEN, or bound UDP)."""
    want = f"{socket.htonl(int.from_bytes(socket.inet_aton(host), 'big')):08X}:{port:04X}"
    table = Path("/proc/net/udp" if udp else "/proc/net/tcp").read_text().splitlines()[1:]
    state = "07" if udp else "0A"
    return {f[9] for f in (line.split() for line in table) if f[1] == want and f[3] == state}


def _session_owns(sid: int, inodes: set[str]) -> bool:
    """True if a process of session ``sid`` holds one of the socket ``inodes``."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in _session_members(sid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    return True
            except OSError:
                continue
    return False


def claim(d: Path, kind: str) -> None:
    """Refuse to reuse an instance directory whose server (lab.pid) is still running."""
    pidfile = d / "lab.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    if _alive(pid) and comm(pid) == _COMM[kind]:
        raise LabError(f"{kind}: {d} is in use by running PID {pid}; use another root")


def _spawn(cmd: list[str], log: Path, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server in its own session, output appended to ``log``, stdin from /dev/null."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd, env=env, start_new_session=True, close_fds=True)
    _CHILDREN[proc.pid] = proc
    return proc


@dataclass
class Server:
    """A running lab server: ``pid`` is the main (master) process, leader of its own session.

    ``root`` is the server's own directory (config, data, logs).
    """

    name: str
    pid: int
    ports: dict[str, int]
    host: str
    root: Path

    @property
    def kind(self) -> str:
        """Server kind: dovecot, cyrus, saslauthd, slapd, postfix, nginx or dnsmasq."""
        return self.name.split("-")[0]

    def stop(self) -> None:
        """Stop the server by its recorded PID and wait until it and its session are gone."""
        stop_servers([self])


def _is_ours(server: Server) -> bool:
    if server.pid in _CHILDREN:
        return True
    expected = _COMM.get(server.kind)
    return expected is None or comm(server.pid) == expected


def running(server: Server) -> bool:
    """True while ``server``'s recorded PID runs and is that server (not a reused PID)."""
    return _alive(server.pid) and _is_ours(server)


def stop_servers(servers: Iterable[Server], timeout: float = STOP_TIMEOUT) -> None:
    """Stop several servers in parallel (signal all, then wait; SIGKILL after ``timeout``)."""
    servers = [s for s in servers if _alive(s.pid) and _is_ours(s)]
    for server in servers:
        try:
            os.kill(server.pid, _STOP_SIGNAL.get(server.kind, signal.SIGTERM))
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    pending = list(servers)
    while pending and time.monotonic() < deadline:
        pending = [s for s in pending if _alive(s.pid) or _session_members(s.pid)]
        if pending:
            time.sleep(0.05)
    for server in pending:  # stragglers: kill the whole session we started
        for pid in [server.pid, *_session_members(server.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    kill_deadline = time.monotonic() + 5.0
    while pending and time.monotonic() < kill_deadline:
        pending = [s for s in pending if _alive(s.pid) or _session_members(s.pid)]
        if pending:
            time.sleep(0.05)
    for server in servers:
        proc = _CHILDREN.pop(server.pid, None)
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
    if pending:
        raise LabError(f"{pending[0].name}: PID {pending[0].pid} still running after SIGKILL")


def launch(name: str, root: Path, host: str, port_names: list[str],
           prepare: Callable[[dict[str, int]], list[str]], logs: list[Path],
           banner: tuple[str, bytes] | None = None, udp: bool = False,
           env: dict[str, str] | None = None, after: Callable[[Server], None] | None = None
           ) -> Server:
    """Pick free ports, write the config (``prepare`` returns the command), start, wait ready.

    Retries with new ports if a port was taken in between; never leaves a half-started server.
    """
    for attempt in range(3):
        ports = dict(zip(port_names, _free_ports(len(port_names), host, udp), strict=True))
        cmd = prepare(ports)
        proc = _spawn(cmd, logs[0], cwd=root, env=env)
        server = Server(name, proc.pid, ports, host, root)
        (root / "lab.pid").write_text(f"{proc.pid}\n")
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            for pname, port in ports.items():
                want = banner[1] if banner and banner[0] == pname else None
                while not _connect_once(host, port, want, 1.0):
                    if proc.poll() is not None:
                        raise LabError(f"{name}: exited with rc {proc.returncode} during startup"
                                       f" [{tail(*logs)}]")
                    if time.monotonic() >= deadline:
                        raise LabError(f"{name}: {host}:{pname}={port} not ready after "
                                       f"{READY_TIMEOUT} s [{tail(*logs)}]")
                    time.sleep(0.03)
                # someone else may have taken the port between free_port() and our bind
                if not _session_owns(proc.pid, _listen_inodes(host, port)):
                    raise LabError(f"{name}: {host}:{port} ({pname}) already in use by another"
                                   f" process [{tail(*logs)}]")
            if after is not None:
                after(server)
            return server
        except LabError as exc:
            stop_servers([server])
            if attempt == 2 or "in use" not in str(exc).lower():
                raise
        except BaseException:
            stop_servers([server])
            raise
    raise AssertionError("unreachable")

