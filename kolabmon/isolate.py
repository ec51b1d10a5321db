"""Run work that may block in the kernel (a dead NFS/iSCSI mount) in a disposable process.

A process blocked in such I/O ignores every signal until the I/O returns, so the caller must be
able to walk away from it at the deadline: `isolated` runs the work in a grandchild, reads what it
reports, and at the deadline kills it (through a pidfd), does not wait for it, and raises `Hung`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from kolabmon import runtime

Report = Callable[[dict[str, object]], None]


class Hung(runtime.PluginError):
    """The work did not finish in time; the process stuck in it was killed and left behind."""


def isolated(work: Callable[[Report], None], clock: runtime.Clock, what: str) -> dict[str, object]:
    """Run `work(report)` in a grandchild; return what it reported, or raise `Hung` at the deadline.

    `what` names the work in the messages (`storage I/O hung ...`). Each `report` is one JSON line
    to the parent; a `{"step": ...}` moves the clock on.

    A process blocked in the kernel on a dead mount ignores even SIGKILL until the I/O returns, so
    the check must never wait for it. The grandchild (fork, fork, the middle one exits at once) is
    never ours to reap: a long-running worker that calls probes in-process collects no zombies.
    It holds only its own two pipes (stdio on /dev/null), so the plugin's stdout reaches EOF when
    the plugin exits, and it starts only on a "go" after the parent holds a pidfd to it: the kill
    can never reach a recycled PID.
    """
    import json
    import select
    import signal
    import time

    result_r, result_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        middle = os.fork()
    except OSError as exc:
        for end in (result_r, result_w, go_r, go_w):
            os.close(end)
        raise runtime.PluginError(f"cannot start the {what} process: {exc.strerror}", runtime.UNKNOWN) from None
    if middle == 0:
        try:
            if os.fork() == 0:
                _grandchild(work, result_w, go_r)
        finally:
            os._exit(0)
    os.close(result_w)
    os.close(go_r)
    try:
        os.waitpid(middle, 0)  # it only forks: back at once
    except ChildProcessError:  # SIGCHLD ignored by whoever runs us: the kernel reaped it
        pass
    deadline = time.monotonic() + clock.for_waiting()  # the hang is reported before the watchdog's generic line
    facts: dict[str, object] = {}
    pidfd: int | None = None
    pending, pid, started = b"", 0, time.monotonic()
    try:
        while "done" not in facts:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([result_r], [], [], wait)[0]:
                try:
                    if pidfd is not None:
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    elif pid:  # no pidfd: its pipe is still open (no EOF), so the PID is still its own
                        os.kill(pid, signal.SIGKILL)
                except OSError:  # it got out on its own just now
                    pass
                after = time.monotonic() - started
                left = f"; process {pid} stays blocked until the storage answers" if pid else ""
                raise Hung(f"{what} hung (while {clock.step}) after {after:.1f} s{left}")
            chunk = os.read(result_r, 65536)
            if not chunk:
                raise runtime.PluginError(f"the {what} process died (while {clock.step})", runtime.UNKNOWN)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                message = json.loads(line)
                if "pid" in message:
                    pid = message["pid"]
                    pidfd = _pidfd(pid)  # it waits for "go": alive, so the pidfd is its own
                    os.write(go_w, b"g")
                    started = time.monotonic()
                elif "step" in message:
                    clock.enter(message["step"])
                elif "error" in message:
                    raise runtime.PluginError(f"internal error in the {what} process: {message['error']}",
                                              runtime.UNKNOWN)
                facts.update(message)
    finally:
        for fd in (result_r, go_w, pidfd):
            if fd is not None:
                os.close(fd)
    return facts


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:  # kernel before 5.3, or a seccomp filter
        return None


def _grandchild(work: Callable[[Report], None], result_w: int, go_r: int) -> None:
    """Never returns: no stdio, no inherited descriptors, waits for "go", works, reports, exits."""
    import fcntl
    import json

    code = 0
    try:
        # above stdio first: a parent started with stdin closed may have got its pipes as fd 0 or 1
        result_w, go_r = fcntl.fcntl(result_w, fcntl.F_DUPFD, 3), fcntl.fcntl(go_r, fcntl.F_DUPFD, 3)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        low, high = sorted((result_w, go_r))
        os.closerange(3, low)
        os.closerange(low + 1, high)
        os.closerange(high + 1, os.sysconf("SC_OPEN_MAX"))
        parent_gone = False

        def report(message: dict[str, object]) -> None:
            nonlocal parent_gone
            if not parent_gone:  # with the parent gone, finish anyway: the probe file must not stay
                try:
                    os.write(result_w, json.dumps(message).encode() + b"\n")
                except BrokenPipeError:
                    parent_gone = True

        report({"pid": os.getpid()})
        if os.read(go_r, 1):  # EOF: the parent gave up before the start
            work(report)
            report({"done": True})
    except BaseException as exc:  # the parent turns it into one UNKNOWN line
        code = 1
        try:
            os.write(result_w, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode() + b"\n")
        except BaseException:
            pass
    finally:
        os._exit(code)
