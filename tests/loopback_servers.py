"""Real servers on loopback for the plugins' tests: HTTP, SMPP, SMTP, and Kannel's boxes.

Each listens on a free port of 127.0.0.1, records what it received, and is
stopped by its context manager.  Nothing here imitates a client library:
the transports under test talk to these over real sockets.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import struct
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


# -- HTTP --


@attrs.frozen
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when received

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))

    def json(self) -> Any:
        return json.loads(self.body)


#: Given a request, the status and the body to answer with, and any headers to add.
Responder = Callable[[HttpRequest], tuple[int, bytes] | tuple[int, bytes, Mapping[str, str]]]


class HttpRecorder:
    """An HTTP server recording every request; `responder` decides each answer."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.requests: list[HttpRequest] = []
        self.responder: Responder = responder or (lambda _r: (200, b'{"ok": true}'))
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = HttpRequest(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    time.time(),
                )
                with recorder._lock:
                    recorder.requests.append(request)
                answer = recorder.responder(request)
                status, body = answer[0], answer[1]
                self.send_response(status)
                for name, value in (answer[2] if len(answer) == 3 else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> HttpRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> list[HttpRequest]:
        with self._lock:
            return list(self.requests)


# -- SMPP 3.4: a small SMSC --

BIND_TRANSMITTER, BIND_TRANSCEIVER = 0x00000002, 0x00000009
SUBMIT_SM, UNBIND, ENQUIRE_LINK = 0x00000004, 0x00000006, 0x00000015
RESP = 0x80000000
ESME_ROK, ESME_RINVCMDID, ESME_RINVPASWD = 0x00, 0x03, 0x0E
ESME_RINVDSTADR, ESME_RTHROTTLED, ESME_RMSGQFUL = 0x0B, 0x58, 0x14


@attrs.frozen
class Submit:
    """One submit_sm as the SMSC decoded it."""

    system_id: str
    source_addr_ton: int
    source_addr: str
    dest_addr_ton: int
    destination_addr: str
    esm_class: int
    validity_period: str
    registered_delivery: int
    data_coding: int
    short_message: bytes
    message_id: str
    at: float

    @property
    def udh(self) -> bytes:
        if not self.esm_class & 0x40:
            return b""
        return self.short_message[: self.short_message[0] + 1]

    @property
    def text(self) -> str:
        """The part's text: UCS-2 decoded, or GSM 7-bit septets read back as characters."""
        payload = self.short_message[len(self.udh) :]
        if self.data_coding == 0x08:
            return payload.decode("utf-16-be")
        return gsm7_decode(payload)


_GSM7 = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~"}
_GSM7_EXT |= {0x3E: "]", 0x40: "|", 0x65: "€"}


def gsm7_decode(septets: bytes) -> str:
    out, escape = [], False
    for b in septets:
        if escape:
            out.append(_GSM7_EXT[b])
            escape = False
        elif b == 0x1B:
            escape = True
        else:
            out.append(_GSM7[b])
    return "".join(out)


def _cstring(body: bytes, pos: int) -> tuple[str, int]:
    end = body.index(b"\0", pos)
    return body[pos:end].decode("latin-1"), end + 1


class SmscServer:
    """An SMSC speaking the SMPP 3.4 PDUs a transmitter/transceiver needs.

    bind_transmitter/bind_transceiver (checked against system_id/password),
    submit_sm (recorded, answered with a message id; numbers in `reject` get
    ESME_RINVDSTADR, and the first `throttle` submits `throttle_status`,
    ESME_RTHROTTLED unless set),
    enquire_link and unbind.  `drop_all()` cuts every session, as an SMSC
    restart would.
    """

    def __init__(self, system_id: str = "esme", password: str = "secret") -> None:
        self.system_id, self.password = system_id, password
        self.submits: list[Submit] = []
        self.binds: list[tuple[str, int]] = []  # (system_id, command id), successful ones
        self.enquire_links = 0
        self.unbinds = 0
        self.reject: set[str] = set()
        self.throttle = 0
        self.throttle_status = ESME_RTHROTTLED
        self.max_outstanding_seen = 0
        #: Seconds before each submit_sm_resp.
        self.answer_delay = 0.0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        smsc = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with smsc._lock:
                    smsc._sockets.append(self.request)
                smsc._serve(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> SmscServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop_all()
        self.server.shutdown()
        self.server.server_close()

    def drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def received(self) -> list[Submit]:
        with self._lock:
            return list(self.submits)

    @staticmethod
    def _read(sock: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _serve(self, sock: socket.socket) -> None:
        bound_as = ""
        send_lock = threading.Lock()
        outstanding = [0]  # submits received and not yet answered, on this session

        def send(pdu: bytes, submit: bool = False) -> None:
            with send_lock:
                with contextlib.suppress(OSError):
                    sock.sendall(pdu)
                if submit:
                    outstanding[0] -= 1

        try:
            while True:
                header = self._read(sock, 16)
                length, command, _status, sequence = struct.unpack(">IIII", header)
                body = self._read(sock, length - 16)
                status, reply = ESME_ROK, b""
                if command in (BIND_TRANSMITTER, BIND_TRANSCEIVER):
                    system_id, pos = _cstring(body, 0)
                    password, pos = _cstring(body, pos)
                    if (system_id, password) != (self.system_id, self.password):
                        status = ESME_RINVPASWD
                    else:
                        bound_as = system_id
                        with self._lock:
                            self.binds.append((system_id, command))
                    reply = b"infsched-test-smsc\0"
                elif command == SUBMIT_SM and bound_as:
                    status, reply = self._submit(bound_as, body)
                    pdu = struct.pack(">IIII", 16 + len(reply), command | RESP, status, sequence)
                    with send_lock:
                        outstanding[0] += 1
                        with self._lock:
                            self.max_outstanding_seen = max(
                                self.max_outstanding_seen, outstanding[0]
                            )
                    # Answered later, from another thread: the client's window shows.
                    timer = threading.Timer(self.answer_delay, send, (pdu + reply, True))
                    timer.daemon = True
                    timer.start()
                    continue
                elif command == ENQUIRE_LINK:
                    with self._lock:
                        self.enquire_links += 1
                elif command == UNBIND:
                    with self._lock:
                        self.unbinds += 1
                    send(struct.pack(">IIII", 16, UNBIND | RESP, 0, sequence))
                    return
                else:
                    status = ESME_RINVCMDID
                send(
                    struct.pack(">IIII", 16 + len(reply), command | RESP, status, sequence) + reply
                )
        except (ConnectionError, OSError):
            return
        finally:
            time.sleep(self.answer_delay)  # let pending answers go out before closing
            sock.close()

    def _submit(self, system_id: str, body: bytes) -> tuple[int, bytes]:
        _service_type, pos = _cstring(body, 0)
        src_ton = body[pos]
        source, pos = _cstring(body, pos + 2)
        dst_ton = body[pos]
        destination, pos = _cstring(body, pos + 2)
        esm_class = body[pos]
        _schedule, pos = _cstring(body, pos + 3)
        validity, pos = _cstring(body, pos)
        registered, data_coding = body[pos], body[pos + 2]
        sm_length = body[pos + 4]
        short_message = body[pos + 5 : pos + 5 + sm_length]
        with self._lock:
            if destination in self.reject:
                return ESME_RINVDSTADR, b"\0"
            if self.throttle > 0:
                self.throttle -= 1
                return self.throttle_status, b"\0"
            message_id = f"m{len(self.submits) + 1}"
            self.submits.append(
                Submit(
                    system_id,
                    src_ton,
                    source,
                    dst_ton,
                    destination,
                    esm_class,
                    validity,
                    registered,
                    data_coding,
                    short_message,
                    message_id,
                    time.time(),
                )
            )
        return ESME_ROK, message_id.encode() + b"\0"


# -- Kannel: bearerbox + smsbox + fakesmsc as the operator's SMSC --

KANNEL_BIN = Path("/usr/sbin")
KANNEL_TEST = Path("/usr/lib/kannel/test")


@attrs.frozen
class SmscMessage:
    """A message as fakesmsc printed it: ``Got message N: <from to type ...>``."""

    sender: str
    to: str
    udh: bytes
    text: str
    at: float


def parse_fakesmsc(line: str, at: float) -> SmscMessage:
    inner = line[line.index("<") + 1 : line.rindex(">")]
    sender, to, rest = inner.split(" ", 2)
    udh = b""
    if rest.startswith("udh "):
        _, raw_udh, rest = rest.split(" ", 2)
        udh = urllib.parse.unquote_to_bytes(raw_udh)
    kind, _, payload = rest.partition(" ")
    if kind == "text":
        text = payload
    elif kind == "ucs-2":
        text = urllib.parse.unquote_to_bytes(payload.replace("+", " ")).decode("utf-16-be")
    else:  # "data": url-encoded octets
        text = urllib.parse.unquote_to_bytes(payload.replace("+", " ")).decode("latin-1")
    return SmscMessage(sender, to, udh, text, at)


class KannelBoxes:
    """Kannel's bearerbox and smsbox, and fakesmsc as the SMSC, on free loopback ports."""

    def __init__(self, workdir: Path, username: str = "tester", password: str = "secret") -> None:
        self.workdir = workdir
        self.username, self.password = username, password
        self.admin_port, self.smsbox_port = free_port(), free_port()
        self.smsc_port, self.sendsms_port = free_port(), free_port()
        self.sendsms_url = f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms"
        self._processes: list[subprocess.Popen[bytes]] = []
        self._fakesmsc_log = workdir / "fakesmsc.log"
        self._seen: dict[int, float] = {}

    @staticmethod
    def available() -> bool:
        return all(
            p.exists()
            for p in (KANNEL_BIN / "bearerbox", KANNEL_BIN / "smsbox", KANNEL_TEST / "fakesmsc")
        )

    def config(self) -> str:
        return f"""
group = core
admin-port = {self.admin_port}
admin-password = admin-secret
admin-allow-ip = "127.0.0.1"
smsbox-port = {self.smsbox_port}
box-allow-ip = "127.0.0.1"
log-file = "{self.workdir}/bearerbox.log"
log-level = 1

group = smsc
smsc = fake
smsc-id = fake
port = {self.smsc_port}
connect-allow-ip = "127.0.0.1"

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = {self.sendsms_port}
log-file = "{self.workdir}/smsbox.log"
log-level = 1

group = sendsms-user
username = {self.username}
password = {self.password}
max-messages = 10
concatenation = true
"""

    def _start(self, args: list[str], name: str, stdin: int | None = None) -> None:
        out = (self.workdir / f"{name}.out").open("wb")
        self._processes.append(
            subprocess.Popen(
                args, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        )

    def __enter__(self) -> KannelBoxes:
        conf = self.workdir / "kannel.conf"
        conf.write_text(self.config())
        try:
            self._start([str(KANNEL_BIN / "bearerbox"), "-v", "4", str(conf)], "bearerbox")
            wait_for(lambda: accepts(self.smsbox_port), 20, "bearerbox to listen")
            self._start([str(KANNEL_BIN / "smsbox"), "-v", "4", str(conf)], "smsbox")
            # fakesmsc reads messages to send from stdin and stops at its end: keep it open.
            fakesmsc = KANNEL_TEST / "fakesmsc"
            args = [str(fakesmsc), "-H", "127.0.0.1", "-r", str(self.smsc_port), "-m", "0"]
            with self._fakesmsc_log.open("wb") as log_file:
                self._processes.append(
                    subprocess.Popen(
                        args,
                        stdin=subprocess.PIPE,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        cwd=self.workdir,
                    )
                )
            wait_for(lambda: accepts(self.sendsms_port), 20, "smsbox to listen")
            wait_for(self._smsc_online, 20, "fakesmsc to connect to bearerbox")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _smsc_online(self) -> bool:
        url = f"http://127.0.0.1:{self.admin_port}/status.txt?password=admin-secret"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                status = response.read().decode()
        except OSError:
            return False
        return any("fake" in line and "online" in line for line in status.splitlines())

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdin is not None:
                process.stdin.close()
        self._processes = []

    def received(self) -> list[SmscMessage]:
        """What the SMSC got so far; each with the time this method first saw it."""
        found = []
        now = time.time()
        for line in self._fakesmsc_log.read_text(errors="replace").splitlines():
            if "Got message " not in line:
                continue
            number = int(line.split("Got message ", 1)[1].split(":", 1)[0])
            at = self._seen.setdefault(number, now)
            found.append(parse_fakesmsc(line, at))
        return found

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-2000:]
            for p in [*sorted(self.workdir.glob("*.out")), self._fakesmsc_log]
        )


# -- SMTP (aiosmtpd) --


@attrs.frozen
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float


class SmtpRecorder:
    """An aiosmtpd server on loopback keeping every message; optional STARTTLS and AUTH."""

    def __init__(
        self,
        *,
        tls_cert: tuple[Path, Path] | None = None,
        login: tuple[str, str] | None = None,
        refuse: set[str] | None = None,
    ) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

        self.messages: list[ReceivedMail] = []
        self.refuse = refuse or set()
        self.port = free_port()
        recorder = self

        class Handler:
            async def handle_RCPT(
                self,
                server: object,
                session: Session,
                envelope: Envelope,
                address: str,
                rcpt_options: list[str],
            ) -> str:
                if address in recorder.refuse:
                    return "550 5.1.1 no such user"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(
                self, server: object, session: Session, envelope: Envelope
            ) -> str:
                raw = envelope.original_content or b""
                message = BytesParser(policy=default_policy).parsebytes(raw)
                assert isinstance(message, EmailMessage)
                recorder.messages.append(
                    ReceivedMail(
                        str(envelope.mail_from), list(envelope.rcpt_tos), message, time.time()
                    )
                )
                return "250 Message accepted"

        def authenticate(
            server: object, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                login is not None
                and isinstance(data, LoginPassword)
                and (data.login.decode(), data.password.decode()) == login
            )
            return AuthResult(success=ok, handled=False)

        kwargs: dict[str, Any] = {}
        if tls_cert is not None:
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls_cert[0]), str(tls_cert[1]))
            kwargs.update(tls_context=context, require_starttls=True)
        if login is not None:
            kwargs.update(authenticator=authenticate, auth_require_tls=tls_cert is not None)
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> SmtpRecorder:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
