"""SMTP client: one conversation (connect plain, STARTTLS or implicit TLS, EHLO, AUTH, send, QUIT),
every step named on the clock and bounded by its deadline, smtplib's errors as one message.

The SMTP probe, the round trip and kolabmon-notify talk SMTP through `SmtpSession`.
"""

from __future__ import annotations

from collections.abc import Sequence

from kolabmon import runtime
from kolabmon.clients import errors

TYPE_CHECKING = False  # no typing import at start-up (see runtime)
if TYPE_CHECKING:
    import smtplib
    import ssl

MECHANISMS = ("PLAIN", "LOGIN")  # what kolabmon speaks, in order of preference
DEFAULT_EHLO = "kolabmon.localdomain"


class Refused(runtime.PluginError):
    """The server answered in SMTP, and said no (a 4xx/5xx reply): `what` it refused, its `reply`."""

    def __init__(self, what: str, reply: str) -> None:
        super().__init__(f"server refused {what}: {reply}")
        self.what, self.reply = what, reply


class SmtpSession:
    """One SMTP conversation; every step is named on the clock and bounded by its deadline.

    `leg` names the service in step names when another probe (the round trip) runs the session.
    """

    def __init__(self, clock: runtime.Clock, context: ssl.SSLContext | None = None,
                 implicit_tls: bool = False, ehlo_name: str | None = None, leg: str = "") -> None:
        self.clock, self.context, self.implicit_tls, self.leg = clock, context, implicit_tls, leg
        if not ehlo_name:
            clock.enter(self.named("looking up the local host name"))
        self.ehlo_name = ehlo_name or local_fqdn()
        self.smtp: smtplib.SMTP | None = None
        self.banner = ""
        self.upgraded = False  # STARTTLS done: `features` are those offered over TLS
        self.features_before_tls: dict[str, str] = {}
        self.features: dict[str, str] = {}
        self.mechanism: str | None = None
        self.refused: dict[str, str] = {}  # recipients refused by `send`, with the server's reply
        self.heard: Heard | None = None

    @property
    def phase(self) -> str:
        """Which session state the current EHLO answer describes, in the admin's words."""
        if self.implicit_tls:
            return "over implicit TLS"
        return "after STARTTLS" if self.upgraded else "on the plain connection"

    def named(self, what: str) -> str:
        """A step name, with the leg when there is one: `reading the banner on SMTP`."""
        if not self.leg:
            return what
        return f"connecting to {self.leg}" if what == "connecting" else f"{what} on {self.leg}"

    def step(self, what: str) -> None:
        left = self.clock.enter(self.named(what))
        if self.smtp is not None and self.smtp.sock is not None:
            self.smtp.sock.settimeout(left)

    def open(self, host: str, port: int, starttls: bool = False) -> None:
        """Connect, read the banner, say EHLO, and upgrade with STARTTLS if asked."""
        import smtplib

        session = self

        class Smtp(smtplib.SMTP_SSL if self.implicit_tls else smtplib.SMTP):  # type: ignore[misc]
            def _get_socket(self, *address: object) -> object:
                sock = super()._get_socket(*address)  # connected (and TLS handshake done)
                sock.settimeout(session.clock.enter(session.named("reading the banner")))
                return sock

            def connect(self, *address: object, **kwargs: object) -> tuple[int, bytes]:
                code, message = super().connect(*address, **kwargs)
                session.banner = f"{code} {first_line(message)}"
                return code, message

            def getreply(self) -> tuple[int, bytes]:
                if self.file is None:  # type: ignore[has-type]  # smtplib cuts 4 bytes off a line without a code: keep it whole
                    self.file = session.heard = Heard(self.sock.makefile("rb"))
                return super().getreply()

        options = {"context": self.context} if self.implicit_tls else {}
        self.clock.enter(self.named("connecting"))
        try:
            with translated(self.clock, smtplib.SMTPConnectError):
                self.smtp = Smtp(host, port, local_hostname=self.ehlo_name, timeout=self.clock.remaining(),
                                 **options)
        except smtplib.SMTPConnectError as exc:  # the banner was no 220
            if exc.smtp_code == -1:
                raise runtime.PluginError(f"unexpected banner (not SMTP): {self.last_line()!r}") from None
            raise Refused("the session", f"{exc.smtp_code} {text(exc.smtp_error)}") from None
        self.hello()
        self.features_before_tls = self.features
        if starttls:
            if "starttls" not in self.features:
                raise runtime.PluginError(f"server does not offer STARTTLS (EHLO {self.phase} advertises "
                                          f"{self.keywords() or 'nothing'})")
            self.starttls()

    def starttls(self) -> None:
        """STARTTLS on the plain connection, then EHLO again (the extensions may change)."""
        import smtplib

        self.step("starting TLS")
        try:
            with translated(self.clock, smtplib.SMTPResponseException):
                self.smtp.starttls(context=self.context)  # type: ignore[union-attr]
        except smtplib.SMTPResponseException as exc:
            raise Refused("STARTTLS", reply(exc.smtp_code, exc.smtp_error)) from None
        self.upgraded = True
        self.hello(" after STARTTLS")

    def hello(self, when: str = "") -> None:
        """EHLO (HELO if the server knows no ESMTP); keeps the advertised extensions."""
        smtp = self.smtp
        assert smtp is not None
        self.step("saying EHLO" + when)
        with translated(self.clock):
            code, message = smtp.ehlo(self.ehlo_name)
            if 500 <= code < 600:  # no ESMTP: plain SMTP still carries mail
                code, message = smtp.helo(self.ehlo_name)
        if code == -1:
            raise runtime.PluginError(f"unexpected answer to EHLO (not SMTP): {self.last_line()!r}")
        if code != 250:
            raise Refused(f"EHLO {self.ehlo_name}", reply(code, message))
        self.features = dict(smtp.esmtp_features)

    def last_line(self) -> str:
        return text(self.heard.last if self.heard else b"")

    def keywords(self) -> str:
        return ", ".join(name.upper() for name in self.features)

    def missing(self, expected: Sequence[str]) -> list[str]:
        """Expected EHLO keywords not advertised (STARTTLS counts where it can appear: before TLS)."""
        return [name for name in expected
                if name.lower() not in (self.features_before_tls if name == "STARTTLS" else self.features)]

    def hint(self) -> str:
        """Why an extension may be missing on a plain connection."""
        if not self.upgraded and not self.implicit_tls and "starttls" in self.features:
            return " (the server offers STARTTLS, and many offer AUTH only after it: try --starttls)"
        return ""

    def login(self, user: str, password: str, mechanism: str | None = None) -> None:
        """AUTH with one mechanism (the chosen one, else the first offered of PLAIN, LOGIN)."""
        smtp = self.smtp
        assert smtp is not None
        offered = self.features.get("auth", "").upper().split()
        if "auth" not in self.features:
            raise runtime.PluginError(f"server offers no AUTH {self.phase}{self.hint()}")
        if mechanism and mechanism not in offered:
            raise runtime.PluginError(f"server does not offer AUTH {mechanism} {self.phase} "
                                      f"(it offers {' '.join(offered) or 'none'})")
        chosen = mechanism or next((m for m in MECHANISMS if m in offered), None)
        if chosen is None:
            raise runtime.PluginError(f"server offers AUTH {' '.join(offered)} only; kolabmon speaks "
                                      f"{' and '.join(MECHANISMS)}")
        import smtplib

        self.step(f"authenticating as {user}")
        smtp.user, smtp.password = user, password
        try:
            with translated(self.clock, smtplib.SMTPAuthenticationError):
                smtp.auth(chosen, getattr(smtp, f"auth_{chosen.lower()}"), initial_response_ok=True)
        except smtplib.SMTPAuthenticationError as exc:
            raise Refused(f"AUTH {chosen} as {user}", reply(exc.smtp_code, exc.smtp_error)) from None
        self.mechanism = chosen

    def send(self, sender: str, recipients: str | Sequence[str], message: bytes) -> str:
        """MAIL FROM, RCPT TO, DATA; returns the server's acceptance (e.g. `queued as 4Xyz`).

        Recipients the server refuses are kept in `refused` (address: reply); if it refuses every
        one, `Refused` names the last.
        """
        smtp = self.smtp
        assert smtp is not None
        recipients = [recipients] if isinstance(recipients, str) else list(recipients)
        self.step(f"sending MAIL FROM:<{sender}>")
        with translated(self.clock):
            code, answer = smtp.mail(sender)
        if code not in (250, 251):
            raise Refused(f"MAIL FROM:<{sender}>", reply(code, answer))
        for recipient in recipients:
            self.step(f"sending RCPT TO:<{recipient}>")
            with translated(self.clock):
                code, answer = smtp.rcpt(recipient)
            if code not in (250, 251):
                self.refused[recipient] = reply(code, answer)
        if len(self.refused) == len(recipients):
            raise Refused(f"RCPT TO:<{recipients[-1]}>", self.refused[recipients[-1]])
        import smtplib

        self.step("sending the message (DATA)")
        try:
            with translated(self.clock, smtplib.SMTPDataError):
                code, answer = smtp.data(message)
        except smtplib.SMTPDataError as exc:  # DATA itself refused
            raise Refused("DATA", reply(exc.smtp_code, exc.smtp_error)) from None
        if code != 250:
            raise Refused("the message", reply(code, answer))
        return text(answer)

    def quit(self) -> None:
        """QUIT politely, briefly: a slow or rude answer to it is not the service's problem."""
        if self.smtp is None or self.smtp.sock is None:
            return
        try:
            self.step("quitting")
            self.smtp.sock.settimeout(self.clock.for_goodbye())
            self.smtp.quit()
        except Exception:  # closing anyway
            pass

    def close(self) -> None:
        if self.smtp is not None:
            self.smtp.close()


class translated:
    """Turn smtplib's errors into what `runtime.classify` knows (the socket error underneath).

    Errors of the `keep` types pass unchanged: the caller says what the server refused.
    """

    def __init__(self, clock: runtime.Clock, *keep: type[BaseException]) -> None:
        self.clock, self.keep = clock, keep

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        import smtplib

        if exc is None or not isinstance(exc, smtplib.SMTPException) or isinstance(exc, self.keep):
            return
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            cause = errors.underlying(exc, outside=("smtplib",))
            if cause is not None:
                raise cause from None  # reset, timeout: classified by the runtime with the step
            raise runtime.PluginError(f"the server closed the connection (while {self.clock.step})") from None
        if isinstance(exc, smtplib.SMTPResponseException):  # e.g. a reply line too long
            raise runtime.PluginError(f"unexpected reply while {self.clock.step}: "
                                      f"{reply(exc.smtp_code, exc.smtp_error)}") from None
        raise runtime.PluginError(f"SMTP error while {self.clock.step}: {exc}") from None


class Heard:
    """The server's side of the socket, remembering the last line read."""

    def __init__(self, file: object) -> None:
        self.file, self.last = file, b""

    def readline(self, size: int = -1) -> bytes:
        self.last = self.file.readline(size)  # type: ignore[attr-defined]
        return self.last

    def close(self) -> None:
        self.file.close()  # type: ignore[attr-defined]


def local_fqdn() -> str:
    """This host's FQDN for EHLO; `kolabmon.localdomain` when it has none."""
    import socket

    name = socket.getfqdn()
    if "." not in name or name.startswith("localhost"):
        return DEFAULT_EHLO
    return name


def first_line(message: bytes | str) -> str:
    return text(message).split("\n", 1)[0]


def text(message: bytes | str) -> str:
    """A server's reply as printable text, shortened."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    printable = "".join(char if char.isprintable() or char == "\n" else "?" for char in message.strip())
    return printable[:200]


def reply(code: int, message: bytes | str) -> str:
    return f"{code} {' '.join(text(message).split())}"
