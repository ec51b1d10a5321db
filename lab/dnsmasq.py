"""dnsmasq answering only the lab's records (nothing forwarded), on loopback."""

from __future__ import annotations

from pathlib import Path

from lab.launch import Server, claim, launch
from lab.util import LabError, make_traversable, mkdir

DEFAULT_DNS_RECORDS: dict[str, list[tuple[str, ...]]] = {
    "A": [("kolab.example.org", "10.99.0.100")],
    "MX": [("example.org", "kolab.example.org", "10")],
    "SRV": [
        ("_imap._tcp.example.org", "kolab.example.org", "143"),
        ("_submission._tcp.example.org", "kolab.example.org", "587"),
        ("_ldap._tcp.example.org", "kolab.example.org", "389"),
    ],
}


def _dnsmasq_args(records: dict[str, list[tuple[str, ...]]]) -> list[str]:
    """dnsmasq options for ``records`` (types A, AAAA, MX, SRV, CNAME, TXT)."""
    opts = {"A": "--host-record", "AAAA": "--host-record", "MX": "--mx-host",
            "SRV": "--srv-host", "CNAME": "--cname", "TXT": "--txt-record"}
    args = []
    for rtype, entries in records.items():
        if rtype.upper() not in opts:
            raise LabError(f"dnsmasq: unsupported record type {rtype!r}")
        for entry in entries:
            args.append(f"{opts[rtype.upper()]}={','.join(str(x) for x in entry)}")
    return args


def start_dnsmasq(root: Path, records: dict[str, list[tuple[str, ...]]] | None = None,
                  host: str = "127.0.0.1") -> Server:
    """Start dnsmasq answering only ``records`` (default DEFAULT_DNS_RECORDS) on UDP+TCP "dns".

    ``records`` maps a type to tuples: A/AAAA (name, addr), MX (name, target, pref),
    SRV (name, target, port[, prio, weight]), CNAME (alias, target), TXT (name, text).
    Nothing is forwarded (--no-resolv).
    """
    d = mkdir(Path(root) / "dnsmasq")
    make_traversable(d)
    claim(d, "dnsmasq")
    out = d / "dnsmasq.log"
    out.write_text("")
    extra = _dnsmasq_args(DEFAULT_DNS_RECORDS if records is None else records)

    def prepare(ports: dict[str, int]) -> list[str]:
        return ["dnsmasq", "--no-daemon", "--keep-in-foreground", f"--port={ports['dns']}",
                f"--listen-address={host}", "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--conf-file=/dev/null", *extra]

    return launch("dnsmasq", d, host, ["dns"], prepare, [out], udp=True)

