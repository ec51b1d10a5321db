"""Small helpers every lab module shares: LabError, running a helper command, files and directories."""

from __future__ import annotations

import os
import pty
import select
import shutil
import stat
import subprocess
import time
from pathlib import Path


class LabError(Exception):
    """A lab server or the lab cluster could not be prepared, started or stopped."""


def comm(pid: int) -> str | None:
    """The command name of ``pid`` (/proc/PID/comm), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def tail(*paths: Path, lines: int = 6) -> str:
    """Return the last lines of the given log files as one line."""
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        last = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        if last:
            parts.append(f"{path.name}: " + " | ".join(last))
    return " || ".join(parts) if parts else "(log empty)"


def run(name: str, cmd: list[str], *, log: Path | None = None, input: bytes | None = None,
        env: dict[str, str] | None = None, timeout: float = 120.0) -> str:
    """Run a helper command; raise LabError naming ``name`` with its output on failure."""
    try:
        res = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=None if input is not None else subprocess.DEVNULL,
                             env=env, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{name}: {cmd[0]} failed: {exc}") from exc
    out = res.stdout.decode(errors="replace")
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{out}")
    if res.returncode != 0:
        one_line = " | ".join(line.strip() for line in out.splitlines() if line.strip())[-800:]
        raise LabError(f"{name}: {' '.join(cmd[:3])} ... exited {res.returncode}: {one_line}")
    return out


def run_with_tty(name: str, cmd: list[str], log: Path, timeout: float = 60.0) -> None:
    """Run ``cmd`` with a pty as stdout/stderr (Postfix only reports errors to a tty)."""
    master_fd, slave_fd = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave_fd, stderr=slave_fd,
                                start_new_session=True)
    except OSError as exc:
        os.close(master_fd)
        os.close(slave_fd)
        raise LabError(f"{name}: {cmd[0]} failed: {exc}") from exc
    os.close(slave_fd)
    chunks = []
    deadline = time.monotonic() + timeout
    eof = False
    try:
        # read until the command exits (a helper it leaves behind may hold the pty open)
        while True:
            done = proc.poll() is not None
            if not eof and select.select([master_fd], [], [], 0 if done else 0.05)[0]:
                try:
                    data = os.read(master_fd, 4096)
                except OSError:  # EIO: no writer left
                    data = b""
                if data:
                    chunks.append(data)
                    continue
                eof = True
            if done:
                break
            if time.monotonic() > deadline:
                proc.kill()
            elif eof:
                time.sleep(0.05)
    finally:
        os.close(master_fd)
    rc = proc.wait()
    out = b"".join(chunks).decode(errors="replace")
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n{out}")
    if rc != 0:
        one_line = " | ".join(line.strip() for line in out.splitlines() if line.strip())[-800:]
        raise LabError(f"{name}: {' '.join(cmd)} exited {rc}: {one_line}")


def mkdir(path: Path, mode: int = 0o755) -> Path:
    """Create ``path`` (and parents) with ``mode``."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def make_traversable(path: Path) -> None:
    """Give ``path`` and all its ancestors the search bit for others (server users need it)."""
    path = path.resolve()
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(stat.S_IMODE(mode) | stat.S_IXOTH | stat.S_IXGRP)


def fresh_dir(path: Path) -> Path:
    """Return an empty directory at ``path`` (removing an old one)."""
    if path.exists():
        shutil.rmtree(path)
    return mkdir(path)


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    """Write ``text`` to ``path`` with ``mode``, which the file has from its creation on (a secret is
    never readable by others, not even for a moment)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)  # whatever the umask took away
    return path
