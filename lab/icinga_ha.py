"""A distributed Icinga 2 for the lab: two masters in one HA zone and an agent on each cluster node.

The layout Icinga's docs recommend for it ("Distributed Monitoring", top down with config sync):

- zone ``master`` with the endpoints of both masters; the first is the *config master*: its zones.d
  holds ``master/`` (the hosts and the apply rules) and ``global-templates/`` (what the agents need
  locally: the CheckCommands and EventCommands, functions.conf, the templates, the constants they
  define); Icinga syncs both to the second master and ``global-templates`` to the agents;
- one zone per agent, named like its endpoint, with parent ``master``: a node host's node-local
  services run there through ``command_endpoint`` (icinga/services.conf), and so do their event
  handlers;
- TLS from Icinga's own PKI (``icinga2 pki new-ca``, ``new-cert``, ``sign-csr``), the CA under this
  work directory, never in /var/lib/icinga2;
- each daemon in the foreground as root (ICINGA2_USER/GROUP, as lab/icinga.py runs one) with its
  own -D directories under the work directory, started through its endpoint's exec prefix (``[]``
  here, ``ip netns exec monitor``, ``lab/on node1``) and stopped by the PID of what was started.

The project's icinga/ config is loaded unchanged; the lab only writes what is around it: each
endpoint's icinga2.conf (constants, ApiListener, zones, endpoints), the hosts (a parameter) and
any lab-only commands (another parameter, into the global zone).

Every master records every check result in a PerfdataWriter spool with the endpoint that ran and
the one that scheduled it (lab.icinga.SOURCES); its REST API answers the lab over TLS with a client
certificate (ApiUser ``client_cn``), so no password exists anywhere.

What Icinga does here that one would not guess (2.13.6 on Debian 12, 2.14.6 on Debian 13; proven by
tests/icinga/test_distributed.py):
- ``function NAME()`` in a zones.d file is not global (the zone directory is evaluated in a scope of
  its own): icinga/functions.conf is read by every endpoint from its own disk (LOCAL_FILES);
- the second master, before it has the config master's config, offers the agents an empty global
  zone, and they take it (one extra validation and reload, commands missing for a moment); it heals
  when the config arrives, so readiness here is "same checksums as the config master, no reload in
  flight, all connected, twice in a row";
- a master takes the other's objects at the second 10 s authority update after the disconnect
  (12-16 s measured); a check the stopped master had sent to an agent reports back to it only, so on
  2.14.6 the survivor runs that command_endpoint check again only when its next check is due
  (the command's timeout + 30 s after it was sent: 45 s for the heartbeat);
- during a master's first 300 s a command_endpoint check on a disconnected agent yields no result at
  all (the service keeps its last state); later UNKNOWN "Remote Icinga instance ... is not connected";
- the first connections wait for Icinga's 10 s reconnect timer unless the listener is up: start()
  starts the agents, then master1, then master2, each once the one before listens;
- Python 3.13 rejects Icinga's certificates in its default strict mode (no Authority Key Identifier,
  Icinga/icinga2#10469): the API client clears VERIFY_X509_STRICT, still checking chain and name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kolabmon.takeover import audit
from lab import cluster as lab
from lab import icinga as lab_icinga
from lab import takeover_config
from lab.util import LabError, run, tail

ROOT = Path(__file__).resolve().parent.parent
MASTER_ZONE = "master"
GLOBAL_ZONE = "global-templates"
API_CLIENT = "kolabmon-lab"  # the CN of the lab's API client certificate (ApiUser client_cn)
# what the agents must have too (global zone) and what only the masters evaluate (master zone)
GLOBAL_FILES = ("commands.conf", "eventcommands.conf", "templates.conf")
MASTER_FILES = ("services.conf", "notifications.conf")
# read by each endpoint from its own disk, outside the config sync: Icinga evaluates a zones.d directory
# in a scope of its own, so a `function NAME()` declared there is not global (2.13.6: "Invalid field
# access (for value of type 'CheckCommand'): 'kolab_check_timeout'"); `const` and `globals.X =` are
LOCAL_FILES = ("functions.conf",)
# a receiver's lines when it activates synced config and when the reload that follows is done (2.13 to 2.15)
STAGED = "was OK, replacing into"
RELOADED = "Reload done, old process shutting down"


@dataclass(frozen=True)
class Endpoint:
    """One Icinga 2 instance: its endpoint name, the address and port it listens on (and the
    others connect to), and the argv that runs a command on its machine."""

    name: str
    host: str
    port: int
    prefix: tuple[str, ...] = ()


@dataclass
class Daemon:
    endpoint: Endpoint
    dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class DistributedIcinga:
    """Two masters (the first the config master) and agents, one zone each below ``master``.

    ``hosts``: the master zone's objects (zones.d/master/hosts.conf): hosts in zone ``master``,
    node hosts with ``vars.agent_endpoint``. ``global_config``: lab-only objects the agents need
    too (zones.d/global-templates/lab.conf). ``constants``: defined on every endpoint before the
    config is read (e.g. KolabmonBinDir)."""

    def __init__(self, workdir: Path, masters: Sequence[Endpoint], agents: Sequence[Endpoint], hosts: str,
                 global_config: str = "", constants: Mapping[str, str] | None = None) -> None:
        if len(masters) != 2:
            raise LabError(f"icinga_ha: the master zone has two endpoints, not {len(masters)}")
        names = [e.name for e in (*masters, *agents)]
        if len(set(names)) != len(names) or API_CLIENT in names:
            raise LabError(f"icinga_ha: endpoint names must be unique (and not {API_CLIENT}): {names}")
        self.dir = workdir
        self.masters = list(masters)
        self.agents = list(agents)
        self.hosts = hosts
        self.global_config = global_config
        self.constants = dict(constants or {})
        self.daemons = {e.name: Daemon(e, workdir / e.name) for e in (*masters, *agents)}
        self.pki = workdir / "pki"
        self.missing = ""  # what wait_connected last found missing

    @property
    def config_master(self) -> Endpoint:
        return self.masters[0]

    # --- PKI -------------------------------------------------------------------------------------

    def make_pki(self) -> None:
        """A CA (icinga2 pki new-ca, in pki/data/ca: -DDataDir points it there) and a certificate
        signed by it for every endpoint and for the lab's API client; each endpoint's own in its
        DataDir/certs, where its ApiListener looks."""
        ca_dir = self.pki / "data"
        if not (ca_dir / "ca" / "ca.crt").exists():
            self.pki.mkdir(parents=True, exist_ok=True)
            self.pki.chmod(0o700)
            run("icinga2 pki new-ca", ["icinga2", "pki", "new-ca", f"-DDataDir={ca_dir}"],
                env=lab_icinga.daemon_env(), timeout=60)

        def certificate(name: str) -> None:
            key, csr, crt = (self.pki / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
            if not crt.exists():
                run(f"icinga2 pki new-cert {name}", ["icinga2", "pki", "new-cert", "--cn", name, "--key", str(key),
                                                     "--csr", str(csr)], env=lab_icinga.daemon_env(), timeout=60)
                run(f"icinga2 pki sign-csr {name}", ["icinga2", "pki", "sign-csr", "--csr", str(csr), "--cert",
                                                     str(crt), f"-DDataDir={ca_dir}"],
                    env=lab_icinga.daemon_env(), timeout=60)

        # 4096-bit keys take a second or two each: all at once
        with ThreadPoolExecutor() as pool:
            list(pool.map(certificate, (*self.daemons, API_CLIENT)))
        for name, daemon in self.daemons.items():
            certs = daemon.dir / "data" / "certs"
            certs.mkdir(parents=True, exist_ok=True)
            for src, dest in ((f"{name}.crt", f"{name}.crt"), (f"{name}.key", f"{name}.key"),
                              ("data/ca/ca.crt", "ca.crt")):
                shutil.copyfile(self.pki / src, certs / dest)
            (certs / f"{name}.key").chmod(0o600)

    # --- config ----------------------------------------------------------------------------------

    def write_config(self) -> None:
        """Each endpoint's icinga2.conf and zones.conf; the config master's zones.d."""
        for daemon in self.daemons.values():
            for sub in ("log", "cache", "spool/perfdata", "run", "zones.d"):
                (daemon.dir / sub).mkdir(parents=True, exist_ok=True)
            (daemon.dir / "icinga2.conf").write_text(self.main_conf(daemon.endpoint))
            (daemon.dir / "zones.conf").write_text(self.zones_conf(daemon.endpoint))
        zones_d = self.daemons[self.config_master.name].dir / "zones.d"
        shutil.rmtree(zones_d)
        for zone, files in ((GLOBAL_ZONE, GLOBAL_FILES), (MASTER_ZONE, MASTER_FILES)):
            (zones_d / zone / "kolabmon").mkdir(parents=True)
            for name in files:
                shutil.copyfile(ROOT / "icinga" / name, zones_d / zone / "kolabmon" / name)
        (zones_d / GLOBAL_ZONE / "lab.conf").write_text(self.global_config)
        (zones_d / MASTER_ZONE / "hosts.conf").write_text(self.hosts)

    def main_conf(self, me: Endpoint) -> str:
        master = me in self.masters
        d = self.daemons[me.name].dir
        consts = "".join(f"const {k} = {json.dumps(v)}\n" for k, v in self.constants.items())
        spool = d / "spool" / "perfdata"
        # the second master and the agents take config from the config master; the agents also run
        # the masters' commands (command_endpoint checks and event handlers)
        accept_config = "true" if me != self.config_master else "false"
        accept_commands = "false" if master else "true"
        includes = "".join(f'include "{ROOT / "icinga" / name}"\n' for name in LOCAL_FILES)
        text = f"""/* lab/icinga_ha.py: endpoint {me.name} of the distributed lab Icinga */
const NodeName = "{me.name}"
const ZoneName = "{MASTER_ZONE if master else me.name}"
const PluginDir = "/usr/lib/nagios/plugins"
{consts}include <itl>
include <plugins>
include "zones.conf"
{includes}object FileLogger "main" {{
  path = "{d / 'log' / 'icinga2.log'}"
  severity = "notice"
}}
object ApiListener "api" {{
  bind_host = "{me.host}"
  bind_port = {me.port}
  accept_config = {accept_config}
  accept_commands = {accept_commands}
}}
object CheckerComponent "checker" {{ }}
"""
        if master:
            text += f"""object NotificationComponent "notification" {{ }}
/* the lab reads the masters' state over the REST API with a client certificate: no password */
object ApiUser "{API_CLIENT}" {{
  client_cn = "{API_CLIENT}"
  permissions = [ "objects/query/*", "status/query" ]
}}
/* every check result this master sees, with who ran it and who scheduled it */
object PerfdataWriter "results" {{
  service_perfdata_path = "{spool}/results"
  service_temp_path = "{spool}/results.tmp"
  host_perfdata_path = "{spool}/hosts"
  host_temp_path = "{spool}/hosts.tmp"
  service_format_template = "{lab_icinga.SOURCES}"
  rotation_interval = 1s
}}
"""
        return text

    def zones_conf(self, me: Endpoint) -> str:
        """The masters know every endpoint and connect to the agents (and the second master to the
        first); an agent knows the masters and itself and waits for them."""
        master = me in self.masters
        known = [*self.masters, *self.agents] if master else [*self.masters, me]

        def endpoint(e: Endpoint) -> str:
            dials = master and e != me and (e in self.agents or self.masters.index(e) < self.masters.index(me))
            where = f'\n  host = "{e.host}"\n  port = {e.port}\n' if dials else " "
            return f'object Endpoint "{e.name}" {{{where}}}\n'

        text = "".join(endpoint(e) for e in known)
        masters = ", ".join(json.dumps(m.name) for m in self.masters)
        text += f'object Zone "{MASTER_ZONE}" {{ endpoints = [ {masters} ] }}\n'
        for agent in (self.agents if master else [me]):
            text += f'object Zone "{agent.name}" {{ endpoints = [ "{agent.name}" ]; parent = "{MASTER_ZONE}" }}\n'
        return text + f'object Zone "{GLOBAL_ZONE}" {{ global = true }}\n'

    # --- run ---------------------------------------------------------------------------------------

    def argv(self, endpoint: Endpoint, *args: str) -> list[str]:
        d = self.daemons[endpoint.name].dir
        return [*endpoint.prefix, "icinga2", "daemon", "-c", str(d / "icinga2.conf"), *args,
                *lab_icinga.defines(d), f"-DZonesDir={d / 'zones.d'}"]

    def env(self, endpoint: Endpoint) -> dict[str, str]:
        return lab_icinga.daemon_env(KOLABMON_ICINGA_ENDPOINT=endpoint.name)

    def validate(self, endpoint: Endpoint) -> None:
        """icinga2 daemon -C of one endpoint's own config (the config master's: with its zones.d)."""
        try:
            check = subprocess.run(self.argv(endpoint, "-C"), capture_output=True, text=True,
                                   env=self.env(endpoint), timeout=90)
        except subprocess.TimeoutExpired:
            raise LabError(f"icinga2 daemon -C of {endpoint.name}: no answer within 90 s") from None
        if check.returncode != 0:
            errors = [line for line in check.stdout.splitlines() if "critical/" in line] or check.stdout.splitlines()
            raise LabError(f"icinga2 daemon -C of {endpoint.name} failed: {' | '.join(errors[-3:])}")

    def start(self, timeout: float = 90) -> None:
        """PKI, config, validation, then every daemon; returns when all are connected and the synced
        config is active everywhere (LabError naming what is missing after `timeout` s)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.make_pki()
        self.write_config()
        with ThreadPoolExecutor() as pool:
            list(pool.map(self.validate, (*self.masters, *self.agents)))
        for endpoint in (*self.masters, *self.agents):
            # no synced config from an earlier run: every receiver takes it afresh (and reloads once)
            for stale in ("api/zones", "api/zones-stage", "api/zones-stage-status", "api/zones-stage-startup.log"):
                path = self.daemons[endpoint.name].dir / "data" / stale
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        # listeners first: whoever dials (masters -> agents, master2 -> master1) finds them up, instead
        # of waiting for Icinga's 10 s reconnect timer
        deadline = time.monotonic() + timeout
        for endpoint in (*self.agents, *self.masters):
            self.start_endpoint(endpoint.name)
            self.wait_listening(endpoint.name, deadline - time.monotonic())
        self.wait_connected(deadline - time.monotonic())

    def start_endpoint(self, name: str) -> None:
        daemon = self.daemons[name]
        if daemon.proc and daemon.proc.poll() is None:
            return
        with open(daemon.dir / "icinga2.out", "wb") as out:
            daemon.proc = subprocess.Popen(self.argv(daemon.endpoint), env=self.env(daemon.endpoint), stdout=out,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
        (daemon.dir / "started.pid").write_text(f"{daemon.proc.pid}\n")

    def wait_listening(self, name: str, timeout: float) -> None:
        endpoint = self.daemons[name].endpoint
        self._wait(f"{name} listening on port {endpoint.port}",
                   lambda: f"Started new listener on '[{endpoint.host}]:{endpoint.port}'" in self.output(name), timeout)

    def _wait(self, what: str, done: Callable[[], object], timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            for name in self.daemons:
                if self.daemons[name].proc and not self.running(name):
                    raise LabError(f"icinga2 of {name} exited: {tail(self.daemons[name].dir / 'icinga2.out')}")
            if done():
                return
            if time.monotonic() > deadline:
                raise LabError(f"distributed Icinga: {what}: not within {timeout:.0f} s")
            time.sleep(0.3)

    def running(self, name: str) -> bool:
        proc = self.daemons[name].proc
        return proc is not None and proc.poll() is None

    def stop(self, *names: str, timeout: float = 30) -> None:
        """Stop these endpoints (default: all) at once, as icinga2.service does (KillMode=mixed):
        SIGTERM to icinga2's umbrella process (it stops its worker; a worker ignores a SIGTERM that is
        not its umbrella's), SIGKILL after `timeout` s to what is left of the process group that
        start_endpoint started (the prefix, the umbrella, the worker and its helpers)."""
        procs = [p for p in (self.daemons[n].proc for n in names or tuple(self.daemons)) if p and p.poll() is None]
        for proc in procs:
            umbrella = _umbrella(proc.pid)
            if umbrella:
                os.kill(umbrella, signal.SIGTERM)
            else:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(10)
            # the worker may outlive the umbrella process by a moment
            while _group_alive(proc.pid) and time.monotonic() < deadline + 5:
                time.sleep(0.1)
            if _group_alive(proc.pid):
                _signal_group(proc.pid, signal.SIGKILL)

    # --- state -------------------------------------------------------------------------------------

    def wait_connected(self, timeout: float = 90) -> None:
        """Until not_ready() has nothing to say twice in a row, a second apart: a reload that a late
        config update triggers drops the connections for a moment (LabError with what is missing)."""
        ready_since: list[float] = []

        def settled() -> bool:
            missing = self.not_ready()
            if missing:
                ready_since.clear()
                self.missing = missing
                return False
            ready_since.append(time.monotonic())
            return ready_since[-1] - ready_since[0] >= 1

        self.missing = "nothing asked yet"
        try:
            self._wait("all connected with the config master's config", settled, timeout)
        except LabError as exc:
            raise LabError(f"{exc}: {self.missing}") from None

    def not_ready(self) -> str:
        """What keeps the setup from being ready, in one line ('' when it is): an endpoint that takes
        config must have the config master's zones (same checksums) and no reload in flight; both
        masters must be connected to every other endpoint."""
        synced = self.daemons[self.config_master.name].dir / "data" / "api" / "zones"
        for endpoint in (*self.masters[1:], *self.agents):
            api = self.daemons[endpoint.name].dir / "data" / "api"
            status = api / "zones-stage-status"
            if status.exists() and status.read_text().strip() not in ("", "0"):
                raise LabError(f"{endpoint.name} refused the synced config: "
                               f"{tail(api / 'zones-stage-startup.log', lines=4)}")
            out = self.output(endpoint.name)
            if out.rfind(STAGED) > out.rfind(RELOADED):  # (reloads asked for in a row are done as one)
                return f"{endpoint.name} is reloading with the synced config"
            for zone in (GLOBAL_ZONE, MASTER_ZONE) if endpoint in self.masters else (GLOBAL_ZONE,):
                sums = api / "zones" / zone / ".checksums"
                if not sums.exists() or sums.read_bytes() != (synced / zone / ".checksums").read_bytes():
                    return f"{endpoint.name} does not have the config master's zone {zone}"
        for master in self.masters:
            try:
                connected = self.connected(master.name)
            except LabError as exc:
                return str(exc)
            others = {n for n in self.daemons if n != master.name}
            if not others <= connected:
                return f"{master.name} is not connected to {', '.join(sorted(others - connected))}"
        return ""

    def connected(self, master: str) -> set[str]:
        """The endpoints this master is connected to (its /v1/status/ApiListener)."""
        status = self.api(master, "/v1/status/ApiListener")
        return set(status["results"][0]["status"]["api"]["conn_endpoints"])

    def authority(self, master: str, type_: str = "services") -> dict[str, bool]:
        """Object name -> whether this master is authoritative for it (not HA-paused) now."""
        answer = self.api(master, f"/v1/objects/{type_}?attrs=paused")
        return {r["name"]: not r["attrs"]["paused"] for r in answer["results"]}

    def api(self, master: str, path: str, timeout: float = 15) -> dict:
        """GET `path` from a master's REST API, from its machine (its exec prefix), with the lab's
        client certificate; the server's certificate is checked against the CA and its endpoint name."""
        endpoint = self.daemons[master].endpoint
        argv = [*endpoint.prefix, sys.executable, "-c", _API_GET, endpoint.host, str(endpoint.port), master,
                str(self.pki / "data" / "ca" / "ca.crt"), str(self.pki / f"{API_CLIENT}.crt"),
                str(self.pki / f"{API_CLIENT}.key"), path, str(timeout)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            raise LabError(f"API of {master}: no answer to {path} within {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise LabError(f"API of {master} {path}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        return json.loads(proc.stdout)

    def results(self, master: str) -> list[lab_icinga.Result]:
        """Every check result a master has seen (its own and, relayed, the other master's)."""
        return lab_icinga.read_results(self.daemons[master].dir / "spool" / "perfdata")

    def output(self, name: str) -> str:
        """What the daemon wrote to stdout/stderr (its umbrella process logs the reloads there)."""
        path = self.daemons[name].dir / "icinga2.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self, name: str) -> str:
        path = self.daemons[name].dir / "log" / "icinga2.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _umbrella(pgid: int) -> int | None:
    """The PID of the icinga2 umbrella process in this process group (an icinga2 whose parent is not
    one), as this machine's /proc sees it (a prefix may have entered a PID namespace)."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()  # state ppid pgrp ...
        stats[int(stat.parent.name)] = (comm, int(fields[1]), int(fields[2]))
    for pid, (comm, ppid, group) in stats.items():
        if group == pgid and comm == "icinga2" and stats.get(ppid, ("", 0, 0))[0] != "icinga2":
            return pid
    return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# GET one path from an Icinga REST API with a client certificate; argv: HOST PORT SERVER_CN CA CERT KEY
# PATH TIMEOUT; prints the JSON body. Run through an endpoint's prefix, i.e. from its machine.
_API_GET = """
import http.client, socket, ssl, sys
host, port, cn, ca, cert, key, path, timeout = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
# Python 3.13 (Debian 13) verifies RFC 5280 strictly by default; Icinga's PKI leaves out the Authority
# Key Identifier (Icinga/icinga2#10469): "certificate verify failed: Missing Authority Key Identifier".
# The chain and the name are still checked.
ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
ctx.load_cert_chain(cert, key)
conn = http.client.HTTPSConnection(host, int(port), timeout=float(timeout), context=ctx)
conn.sock = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=float(timeout)), server_hostname=cn)
conn.request("GET", path, headers={"Accept": "application/json"})
answer = conn.getresponse()
body = answer.read().decode()
if answer.status != 200:
    sys.exit(f"HTTP {answer.status}: {body[:300]}")
print(body)
"""


class LabDistributedIcinga(lab_icinga.LabIcinga):
    """LabIcinga's cluster, hosts and on-call mail, watched by the distributed Icinga: both masters in
    the `monitor` namespace (ports 5665 and 5666), an agent in each node (`lab/on NODE`). The node hosts
    have no command prefix, so their heartbeat and storage checks and storage's kolabmon-takeover run on
    the agents, with a takeover config of their own (no prefix, its own audit log). That config has no
    [notify]: the lab's on-call mail listens on the monitoring host's loopback, which the nodes cannot
    reach (a site's nodes would name its relay)."""

    MASTERS = ("master1", "master2")

    def start(self, timeout: float = 120) -> None:
        self.prepare()
        on_node = {node: takeover_config.write(self.dir / f"takeover-{node}", cooldown=300, fence=True, on_node=True)
                   for node in lab.NODES}
        monitor = ("ip", "netns", "exec", "monitor")
        self.ha = DistributedIcinga(
            self.dir / "ha", [Endpoint(name, lab.MONITOR_IP, 5665 + i, monitor) for i, name in enumerate(self.MASTERS)],
            [Endpoint(node, lab.ADMIN_IPS[node], 5665, (str(lab.ON), node)) for node in lab.NODES],
            self.hosts_conf(agents=on_node), constants={"KolabmonBinDir": str(lab_icinga.BIN)})
        self.ha.start(timeout)
        lab_icinga.wait("a first imap result", lambda: any(r.service == "imap" for r in self.results()), timeout)

    def stop(self) -> None:
        if getattr(self, "ha", None):
            self.ha.stop()
        super().stop()

    def results(self) -> list[lab_icinga.Result]:
        """Every check result either master recorded (each sees the other's), once, in time order."""
        seen = {(r.epoch, r.host, r.service, r.check_source): r for m in self.MASTERS for r in self.ha.results(m)}
        return sorted(seen.values(), key=lambda r: r.epoch)

    def audit(self) -> list[dict]:
        """The decisions of every kolabmon-takeover: the masters' and each agent's, in time order."""
        paths = [self.dir / "takeover" / "audit.jsonl", *sorted(self.dir.glob("takeover-*/audit.jsonl"))]
        return sorted((r for p in paths if p.exists() for r in audit.tail(p)), key=lambda r: r.get("epoch", 0))
