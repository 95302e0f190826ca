"""A development SMTP server that keeps every message as an `.eml` file (open it in any mail
client). It listens on loopback only and delivers nowhere.

It speaks enough of SMTP (RFC 5321) for smtplib and ordinary clients: EHLO/HELO, MAIL FROM,
RCPT TO, DATA (with dot-unstuffing and a size limit), RSET, NOOP, VRFY, HELP, QUIT, and AUTH
PLAIN/LOGIN accepting any credentials so a client configured with SMTP_USERNAME works. No
STARTTLS. Recipients in the reserved `.invalid` domain (RFC 2606) are refused with a 550, which
lets a developer (and the tests) see how a permanent refusal is handled.

`portal mail-sink` runs it in the foreground; `MailSink` runs it in a background thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_RECIPIENTS = 100
MAX_LINE_BYTES = 64 * 1024  # RFC 5321 says 1000; be lenient with clients, strict with memory
IDLE_TIMEOUT_SECONDS = 300.0
HOSTNAME = "portal-mail-sink"

_PATH = re.compile(r"^(FROM|TO):\s*<([^<>]*)>(.*)$", re.IGNORECASE)


class SinkHostError(ValueError):
    pass


def require_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SinkHostError("the development mail sink listens on loopback only")


def store(folder: Path, envelope_from: str, recipients: list[str], data: bytes) -> Path:
    """Write one message atomically (a reader never sees half a file); returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = folder / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
    envelope = (
        f"X-Sink-Envelope-From: <{envelope_from}>\r\n"
        f"X-Sink-Envelope-To: {', '.join(f'<{r}>' for r in recipients)}\r\n"
    ).encode()
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(envelope + data)
    os.replace(temporary, path)
    return path


@dataclass
class _Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    folder: Path
    greeted: bool = False
    envelope_from: str | None = None
    recipients: list[str] = field(default_factory=list)

    async def reply(self, *lines: str) -> None:
        text = "".join(f"{line}\r\n" for line in lines)
        self.writer.write(text.encode())
        await self.writer.drain()

    async def readline(self) -> bytes | None:
        """One line without its line ending; None when the client left or stayed silent."""
        try:
            line = await asyncio.wait_for(self.reader.readline(), IDLE_TIMEOUT_SECONDS)
        except TimeoutError:
            await self.reply("421 4.4.2 idle for too long, closing")
            return None
        except ValueError:  # a line longer than the stream's limit
            await self.reply("500 5.5.6 line too long, closing")
            return None
        if not line:
            return None
        return line.rstrip(b"\r\n")

    def reset(self) -> None:
        self.envelope_from, self.recipients = None, []

    async def run(self) -> None:
        await self.reply(f"220 {HOSTNAME} ESMTP development sink, nothing leaves this machine")
        while (raw := await self.readline()) is not None:
            line = raw.decode("utf-8", errors="replace")
            verb, _, argument = line.partition(" ")
            handler = getattr(self, f"on_{verb.upper()}", None) if verb.isalpha() else None
            if handler is None:
                await self.reply("500 5.5.2 command not recognised")
            elif await handler(argument.strip()) == "quit":
                return

    async def on_HELO(self, argument: str) -> None:
        self.greeted = True
        self.reset()
        await self.reply(f"250 {HOSTNAME}")

    async def on_EHLO(self, argument: str) -> None:
        self.greeted = True
        self.reset()
        await self.reply(
            f"250-{HOSTNAME}",
            f"250-SIZE {MAX_MESSAGE_BYTES}",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-AUTH PLAIN LOGIN",
            "250 HELP",
        )

    async def on_AUTH(self, argument: str) -> None:
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            if not initial:
                await self.reply("334 ")
                initial = (await self.readline() or b"*").decode(errors="replace")
            answers = [initial]
        elif mechanism == "LOGIN":
            answers = []
            for prompt in ("VXNlcm5hbWU6", "UGFzc3dvcmQ6"):  # "Username:", "Password:"
                await self.reply(f"334 {prompt}")
                answers.append((await self.readline() or b"*").decode(errors="replace"))
        else:
            await self.reply("504 5.5.4 unrecognised authentication mechanism")
            return
        try:
            for answer in answers:
                if answer == "*":
                    raise ValueError
                base64.b64decode(answer, validate=True)
        except (ValueError, binascii.Error):
            await self.reply("501 5.5.2 authentication cancelled or malformed")
            return
        await self.reply("235 2.7.0 accepted (the development sink accepts any credentials)")

    async def on_MAIL(self, argument: str) -> None:
        match = _PATH.match(argument)
        if not self.greeted:
            await self.reply("503 5.5.1 send HELO or EHLO first")
        elif self.envelope_from is not None:
            await self.reply("503 5.5.1 a message is already started (RSET to reset)")
        elif match is None or match.group(1).upper() != "FROM":
            await self.reply("501 5.5.4 syntax: MAIL FROM:<address>")
        else:
            size = re.search(r"\bSIZE=(\d+)", match.group(3), re.IGNORECASE)
            if size and int(size.group(1)) > MAX_MESSAGE_BYTES:
                await self.reply("552 5.3.4 message too big")
                return
            self.envelope_from, self.recipients = match.group(2), []
            await self.reply("250 2.1.0 OK")

    async def on_RCPT(self, argument: str) -> None:
        match = _PATH.match(argument)
        if self.envelope_from is None:
            await self.reply("503 5.5.1 MAIL FROM first")
        elif match is None or match.group(1).upper() != "TO" or "@" not in match.group(2):
            await self.reply("501 5.5.4 syntax: RCPT TO:<address>")
        elif match.group(2).lower().rstrip(".").endswith(".invalid"):
            await self.reply(
                f"550 5.1.1 <{match.group(2)}>: recipient address rejected"
                " (the .invalid domain never exists)"
            )
        elif len(self.recipients) >= MAX_RECIPIENTS:
            await self.reply("452 4.5.3 too many recipients")
        else:
            self.recipients.append(match.group(2))
            await self.reply("250 2.1.5 OK")

    async def on_DATA(self, argument: str) -> str | None:
        if self.envelope_from is None or not self.recipients:
            await self.reply("503 5.5.1 MAIL FROM and RCPT TO first")
            return None
        await self.reply("354 end data with <CR><LF>.<CR><LF>")
        lines: list[bytes] = []
        size, too_big = 0, False
        while True:
            line = await self.readline()
            if line is None:
                return "quit"  # the client left mid-message: nothing is stored
            if line == b".":
                break
            if line.startswith(b"."):
                line = line[1:]
            size += len(line) + 2
            too_big = too_big or size > MAX_MESSAGE_BYTES
            if not too_big:
                lines.append(line)
        if too_big:
            self.reset()
            await self.reply("552 5.3.4 message too big")
            return None
        data = b"".join(line + b"\r\n" for line in lines)
        path = await asyncio.to_thread(
            store, self.folder, self.envelope_from, list(self.recipients), data
        )
        self.reset()
        await self.reply(f"250 2.0.0 OK: kept as {path.name}")
        return None

    async def on_RSET(self, argument: str) -> None:
        self.reset()
        await self.reply("250 2.0.0 OK")

    async def on_NOOP(self, argument: str) -> None:
        await self.reply("250 2.0.0 OK")

    async def on_VRFY(self, argument: str) -> None:
        await self.reply("252 2.1.5 cannot verify, but will accept the message")

    async def on_HELP(self, argument: str) -> None:
        await self.reply("214 EHLO HELO MAIL RCPT DATA RSET NOOP VRFY AUTH QUIT")

    async def on_STARTTLS(self, argument: str) -> None:
        await self.reply("454 4.7.0 TLS is not available on the development sink")

    async def on_QUIT(self, argument: str) -> str:
        await self.reply("221 2.0.0 bye")
        return "quit"


async def serve(folder: Path, host: str = "127.0.0.1", port: int = 8025) -> asyncio.Server:
    """Start listening; the caller runs the loop (and closes the server)."""
    require_loopback(host)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _Session(reader, writer, folder).run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=MAX_LINE_BYTES)


def run(folder: Path, host: str = "127.0.0.1", port: int = 8025) -> None:
    """Serve in the foreground until interrupted (KeyboardInterrupt propagates)."""

    async def main() -> None:
        server = await serve(folder, host, port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class MailSink:
    """The sink on a background thread: `with MailSink(folder) as sink: ... sink.port`.

    Port 0 (the default) takes a free port, so parallel runs never collide.
    """

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        require_loopback(host)
        self.folder, self.host, self.port = folder, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MailSink:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self._server = loop.run_until_complete(serve(self.folder, self.host, self.port))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            sockets: list[socket.socket] = list(self._server.sockets)
            self.port = int(sockets[0].getsockname()[1])
            ready.set()
            try:
                loop.run_forever()
            finally:
                self._server.close()
                sessions = asyncio.all_tasks(loop)
                for task in sessions:
                    task.cancel()
                if sessions:
                    loop.run_until_complete(asyncio.gather(*sessions, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=main, name="mail-sink", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = self._thread = None

    def messages(self) -> list[Path]:
        """The stored messages, oldest first."""
        return sorted(self.folder.glob("*.eml")) if self.folder.exists() else []

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
