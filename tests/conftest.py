"""Shared fixtures: the real lab servers (started once per session) and a plugin runner."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import servers  # noqa: E402  (the lab lives beside the package, not in it)


@pytest.fixture(scope="session")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="session")
def certs(lab_root: Path) -> servers.Certs:
    return servers.make_certs(lab_root)


def _started(request: pytest.FixtureRequest, server: servers.Server) -> servers.Server:
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def dovecot(request: pytest.FixtureRequest, lab_root: Path, certs: servers.Certs) -> servers.Server:
    return _started(request, servers.start_dovecot(lab_root, certs))


@pytest.fixture(scope="session")
def slapd(request: pytest.FixtureRequest, lab_root: Path, certs: servers.Certs) -> servers.Server:
    return _started(request, servers.start_slapd(lab_root, certs))


@pytest.fixture(scope="session")
def postfix(request: pytest.FixtureRequest, lab_root: Path, certs: servers.Certs,
            dovecot: servers.Server) -> servers.Server:
    return _started(request, servers.start_postfix(lab_root, certs, dovecot))


@pytest.fixture(scope="session")
def saslauthd(request: pytest.FixtureRequest, lab_root: Path, slapd: servers.Server) -> servers.Server:
    return _started(request, servers.start_saslauthd(lab_root, slapd))


@pytest.fixture(scope="session")
def cyrus(request: pytest.FixtureRequest, lab_root: Path, certs: servers.Certs,
          saslauthd: servers.Server) -> servers.Server:
    """Cyrus IMAP as Kolab runs it: logins through saslauthd against the lab's slapd."""
    return _started(request, servers.start_cyrus(lab_root, certs, servers.mux(saslauthd)))


@pytest.fixture(scope="session")
def cyrus_postfix(request: pytest.FixtureRequest, lab_root: Path, certs: servers.Certs,
                  cyrus: servers.Server, saslauthd: servers.Server) -> servers.Server:
    """Postfix delivering to Cyrus over LMTP, SMTP AUTH through saslauthd."""
    return _started(request, servers.start_postfix(lab_root, certs, cyrus, mux=servers.mux(saslauthd)))


class Backend(NamedTuple):
    """A mail back end as the probes meet it: its IMAP server and the Postfix delivering to it."""

    name: str
    imap: servers.Server
    smtp: servers.Server


BACKENDS = {"dovecot": ("dovecot", "postfix"), "cyrus": ("cyrus", "cyrus_postfix")}


@pytest.fixture(params=list(BACKENDS))
def imap_server(request: pytest.FixtureRequest) -> servers.Server:
    """Each IMAP back end in turn: Dovecot, and Cyrus as Kolab runs it."""
    return request.getfixturevalue(BACKENDS[request.param][0])


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each back end in turn with its Postfix (SMTP AUTH through Dovecot's SASL, or saslauthd)."""
    imap, smtp = BACKENDS[request.param]
    return Backend(request.param, request.getfixturevalue(imap), request.getfixturevalue(smtp))


@pytest.fixture(scope="session")
def nginx(request: pytest.FixtureRequest, lab_root: Path, certs: servers.Certs) -> servers.Server:
    return _started(request, servers.start_nginx(lab_root, certs))


@pytest.fixture(scope="session")
def dnsmasq(request: pytest.FixtureRequest, lab_root: Path) -> servers.Server:
    return _started(request, servers.start_dnsmasq(lab_root))


# the two-node cluster lab (issue 5)
from collections.abc import Iterator  # noqa: E402

from lab import cluster as lab_cluster  # noqa: E402


@pytest.fixture(scope="session")
def cluster() -> Iterator[lab_cluster.Cluster]:
    """The two-node Kolab cluster lab (lab/cluster.py), up once per session and down at its end.

    A concurrent session on the same machine shares it; the last one to finish tears it down.
    """
    with lab_cluster.shared_cluster() as running:
        yield running
