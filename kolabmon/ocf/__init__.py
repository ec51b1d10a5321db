"""The Pacemaker resource agents of provider `kolabmon` (the files beside this module) and installing
them where Pacemaker looks for them: ocf:kolabmon:watcher (kolabmon's resident watcher) and, for a
Kolab cluster's own services, ocf:kolabmon:cyrus-imapd and ocf:kolabmon:saslauthd."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

AGENT = Path(__file__).with_name("watcher")
SERVICE_AGENTS = ("cyrus-imapd", "saslauthd")
PROVIDER_DIR = Path("/usr/lib/ocf/resource.d/kolabmon")
BINARY_DEFAULT = 'OCF_RESKEY_binary_default="kolabmon-watch"\n'
# the path lands in a double-quoted sh string and in the meta-data XML: neither may need escaping
UNSAFE = frozenset('"$`\\<>&\'\n')


def agent_text(binary: str | None = None) -> str:
    """The agent as installed: with `binary` (an absolute path) as the default of its binary parameter."""
    text = AGENT.read_text()
    if binary is None:
        return text
    if not os.path.isabs(binary) or UNSAFE & set(binary):
        raise ValueError(f"binary must be an absolute path without quotes, $, `, \\, <, > or &: {binary!r}")
    if text.count(BINARY_DEFAULT) != 1:
        raise RuntimeError(f"{AGENT}: no single line {BINARY_DEFAULT.strip()!r} to set the binary in")
    return text.replace(BINARY_DEFAULT, f'OCF_RESKEY_binary_default="{binary}"\n')


def install(directory: Path = PROVIDER_DIR, binary: str | None = None) -> Path:
    """Install the watcher agent as DIRECTORY/watcher, mode 755; idempotent. Returns the agent's path."""
    return _place(agent_text(binary), directory, "watcher")


def service_agent_text(name: str) -> str:
    """The service agent ``name`` (one of SERVICE_AGENTS) as shipped and installed."""
    if name not in SERVICE_AGENTS:
        raise ValueError(f"no agent {name!r} (one of {', '.join(SERVICE_AGENTS)})")
    return AGENT.with_name(name).read_text()


def install_service_agent(name: str, directory: Path = PROVIDER_DIR) -> Path:
    """Install the service agent ``name`` (one of SERVICE_AGENTS) as DIRECTORY/NAME; idempotent."""
    return _place(service_agent_text(name), directory, name)


def _place(text: str, directory: Path, name: str) -> Path:
    if not directory.is_dir():
        directory.mkdir(parents=True)
        directory.chmod(0o755)  # Pacemaker and ocf-tester read meta-data as an unprivileged user
    target = directory / name
    if target.is_file() and target.read_text() == text and target.stat().st_mode & 0o777 == 0o755:
        return target
    # a new file renamed into place: a monitor running now reads the old agent or the new one, not half
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
