"""The development SMTP sink: the protocol a client sees, the files a developer opens, and the
`portal mail-sink` command."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

import pytest

from devtools.mail_sink import MAX_MESSAGE_BYTES, MailSink, SinkHostError
from tests.fixtures.notifications import closed_port

PORTAL = str(Path(sys.executable).parent / "portal")


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[MailSink]:
    with MailSink(tmp_path / "mail") as running:
        yield running


def client(sink: MailSink) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", sink.port, timeout=10)


def test_commands_in_the_wrong_order_are_refused(sink: MailSink) -> None:
    with client(sink) as smtp:
        assert smtp.docmd("MAIL", "FROM:<a@example.com>")[0] == 503  # no HELO yet
        assert smtp.helo()[0] == 250
        assert smtp.docmd("RCPT", "TO:<b@example.com>")[0] == 503  # no MAIL yet
        assert smtp.docmd("DATA")[0] == 503
        assert smtp.docmd("MAIL", "FROM:<a@example.com>")[0] == 250
        assert smtp.docmd("MAIL", "FROM:<a@example.com>")[0] == 503  # already started
        assert smtp.docmd("DATA")[0] == 503  # no recipient yet
        assert smtp.docmd("RCPT", "TO:b@example.com")[0] == 501  # no angle brackets
        assert smtp.docmd("NOOP")[0] == 250
        assert smtp.docmd("RSET")[0] == 250
        assert smtp.docmd("RCPT", "TO:<b@example.com>")[0] == 503  # RSET forgot MAIL
        assert smtp.docmd("FROBNICATE")[0] == 500
        assert smtp.docmd("VRFY", "b@example.com")[0] == 252
    assert sink.messages() == []


def test_a_message_is_kept_verbatim_with_its_envelope(sink: MailSink) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "Hi"
    message.set_content("first line\n.a line starting with a dot\n..two dots\n.\nlast\n")

    with client(sink) as smtp:
        assert smtp.ehlo()[0] == 250
        assert smtp.has_extn("size") and smtp.has_extn("8bitmime")
        smtp.send_message(message, to_addrs=["b@example.com", "c@example.com"])

    (path,) = sink.messages()
    assert path.suffix == ".eml"
    kept = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert kept["X-Sink-Envelope-To"] == "<b@example.com>, <c@example.com>"
    assert kept["Subject"] == "Hi"
    body = kept.get_body()
    assert body is not None
    assert (
        body.get_content().replace("\r\n", "\n")
        == "first line\n.a line starting with a dot\n..two dots\n.\nlast\n"
    )
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_several_messages_in_one_session_and_many_clients_at_once(sink: MailSink) -> None:
    def send(n: int) -> None:
        with client(sink) as smtp:
            for i in range(3):
                smtp.sendmail("a@example.com", [f"to{n}@example.com"], f"Subject: {n}-{i}\r\n\r\nx")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(send, range(16)))

    subjects = {
        str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["Subject"])
        for p in sink.messages()
    }
    assert subjects == {f"{n}-{i}" for n in range(16) for i in range(3)}


def test_the_invalid_domain_is_refused_for_good(sink: MailSink) -> None:
    with client(sink) as smtp, pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        smtp.sendmail("a@example.com", ["b@nowhere.invalid"], "Subject: x\r\n\r\nx")
    assert refused.value.recipients["b@nowhere.invalid"][0] == 550


def test_a_message_too_big_is_refused(sink: MailSink) -> None:
    with client(sink) as smtp:
        smtp.ehlo()
        assert smtp.docmd("MAIL", f"FROM:<a@example.com> SIZE={MAX_MESSAGE_BYTES + 1}")[0] == 552


def test_a_client_that_leaves_mid_message_leaves_no_file(sink: MailSink) -> None:
    with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"220")
        for command in (b"HELO x", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>"):
            raw.sendall(command + b"\r\n")
            assert reader.readline().startswith(b"250")
        raw.sendall(b"DATA\r\n")
        assert reader.readline().startswith(b"354")
        raw.sendall(b"Subject: half\r\n\r\nand then the client dies")
    time.sleep(0.3)
    assert sink.messages() == []
    with client(sink) as smtp:  # the sink is still serving
        assert smtp.noop()[0] == 250


def test_the_sink_listens_on_loopback_only(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.0.2.1", "example.com"):  # noqa: S104 - refused
        with pytest.raises(SinkHostError):
            MailSink(tmp_path, host=host)


def _wait_listening(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the mail sink did not start")


def test_portal_mail_sink_command(tmp_path: Path) -> None:
    port = closed_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path)}
    process = subprocess.Popen(
        [PORTAL, "mail-sink", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_listening(port, process)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail("a@example.com", ["b@example.com"], "Subject: via cli\r\n\r\nhello")
        (path,) = (tmp_path / "mail").glob("*.eml")
        assert b"Subject: via cli" in path.read_bytes()

        # A second sink on the same port says so and fails.
        clash = subprocess.run(
            [PORTAL, "mail-sink", "--port", str(port), "--dir", str(tmp_path / "other")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert clash.returncode == 1
        assert "cannot listen" in clash.stdout
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert f"messages in {tmp_path / 'mail'}" in output and "stopped" in output
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
