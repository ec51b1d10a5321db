"""nginx serving free/busy lists (/freebusy/USER.ifb, basic auth) and /health: its config, written
once for the single-host lab and the cluster, and a single-host instance on loopback."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from lab.accounts import USERS
from lab.launch import Server, claim, launch
from lab.tls import Certs
from lab.util import fresh_dir, make_traversable, mkdir, run, write


def write_freebusy(server: Server | Path, user: str, dtstamp: dt.datetime | None = None,
                   body: str | None = None) -> Path:
    """Write <nginx root>/html/freebusy/<user>.ifb (``server`` is the nginx or its root directory):
    a VFREEBUSY, or the raw ``body`` if given.

    DTSTAMP is ``dtstamp`` (default now); DTSTART/DTEND (and one busy hour tomorrow) are
    relative to it. Lines end with CRLF.
    """
    root = server.root if isinstance(server, Server) else server
    path = root / "html" / "freebusy" / f"{user}.ifb"
    if body is None:
        base = (dtstamp or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
        busy = (base + dt.timedelta(days=1)).replace(minute=0, second=0)

        def fmt(t: dt.datetime) -> str:
            return t.strftime("%Y%m%dT%H%M%SZ")

        lines = [
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//kolabmon lab//freebusy//EN",
            "METHOD:PUBLISH", "BEGIN:VFREEBUSY", f"ORGANIZER:mailto:{user}",
            f"DTSTAMP:{fmt(base)}", f"DTSTART:{fmt(base)}",
            f"DTEND:{fmt(base + dt.timedelta(days=56))}",
            f"FREEBUSY;FBTYPE=BUSY:{fmt(busy)}/{fmt(busy + dt.timedelta(hours=1))}",
            "END:VFREEBUSY", "END:VCALENDAR",
        ]
        body = "\r\n".join(lines) + "\r\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(body.encode())
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def write_htpasswd(path: Path, log: Path | None = None) -> Path:
    """The basic-auth file of the lab's USERS (bcrypt)."""
    for i, (user, pw) in enumerate(USERS.items()):
        run("nginx", ["htpasswd", "-bcB" if i == 0 else "-bB", str(path), user, pw], log=log)
    path.chmod(0o644)
    return path


def nginx_conf(host: str, ports: dict[str, int], cert: Path, key: Path, html: Path, htpasswd: Path, *,
               pid: str, error_log: Path, access_log: Path, temp: str, server_name: str,
               foreground: bool = True, health: str = "ok") -> str:
    """nginx.conf: http and https on ``host``, files from ``html``, /freebusy/ behind ``htpasswd``;
    temporary files at ``temp``body, ``temp``proxy, ...; /health answers ``health`` (nginx variables
    allowed). ``foreground``: "daemon off;" (a resource agent wants nginx to daemonize)."""
    daemon = "daemon off;\n" if foreground else ""
    return f"""\
{daemon}worker_processes 1;
pid {pid};
error_log {error_log} info;
events {{ worker_connections 64; }}
http {{
    access_log {access_log};
    client_body_temp_path {temp}body;
    proxy_temp_path {temp}proxy;
    fastcgi_temp_path {temp}fastcgi;
    uwsgi_temp_path {temp}uwsgi;
    scgi_temp_path {temp}scgi;
    types {{ text/calendar ifb ics; text/plain txt; text/html html; }}
    default_type application/octet-stream;
    server {{
        listen {host}:{ports['http']};
        listen {host}:{ports['https']} ssl;
        server_name {server_name};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {html};
        location = /health {{ return 200 "{health}\\n"; }}
        location /freebusy/ {{
            auth_basic "Kolab Free/Busy";
            auth_basic_user_file {htpasswd};
        }}
    }}
}}
"""


def start_nginx(root: Path, certs: Certs, host: str = "127.0.0.1") -> Server:
    """Start nginx (http, https) serving /freebusy/<user>.ifb with basic auth, and /health."""
    d = mkdir(Path(root) / "nginx")
    make_traversable(d)
    claim(d, "nginx")
    conf_dir = fresh_dir(d / "conf")
    logs = fresh_dir(d / "logs")
    tmp = fresh_dir(d / "tmp")
    html = mkdir(d / "html")
    fb = fresh_dir(html / "freebusy")
    htpasswd = write_htpasswd(conf_dir / "htpasswd", log=logs / "setup.log")
    error_log, out = logs / "error.log", logs / "nginx.out"
    conf = conf_dir / "nginx.conf"

    def prepare(ports: dict[str, int]) -> list[str]:
        write(conf, nginx_conf(host, ports, certs.cert, certs.key, html, htpasswd, pid=f"{d}/nginx.pid",
                               error_log=error_log, access_log=logs / "access.log", temp=f"{tmp}/",
                               server_name="localhost"))
        run("nginx", ["nginx", "-t", "-q", "-p", f"{d}/", "-c", str(conf), "-e", str(error_log)],
            log=out)
        return ["nginx", "-p", f"{d}/", "-c", str(conf), "-e", str(error_log)]

    server = launch("nginx", d, host, ["http", "https"], prepare, [out, error_log])
    fb.chmod(0o755)
    for user in USERS:
        write_freebusy(server, user)
    return server
