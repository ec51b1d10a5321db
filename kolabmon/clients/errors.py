"""What the protocol libraries wrap: find the error underneath (usually the socket's) once."""

from __future__ import annotations


def underlying(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...] = OSError,
               outside: tuple[str, ...] = ()) -> BaseException | None:
    """The first `kind` inside a wrapped exception, `exc` itself included, breadth first.

    Libraries wrap in causes, contexts, a `reason` (urllib3) or their args (requests); `outside`
    names packages whose own exceptions do not count (smtplib's and requests' are OSErrors too).
    """
    queue, seen = [exc], set[int]()
    while queue and len(seen) < 50:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind) and not made_by(current, *outside):
            return current
        for inner in (current.__cause__, current.__context__, getattr(current, "reason", None), *current.args):
            if isinstance(inner, BaseException):
                queue.append(inner)
    return None


def made_by(exc: BaseException, *packages: str) -> bool:
    """Whether a library's own exception class (not the socket error it carries) is this one."""
    return type(exc).__module__.split(".")[0] in packages
