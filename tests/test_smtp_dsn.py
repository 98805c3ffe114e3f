"""The SMTP backend asks for a DSN on the wire (RFC 3461) when the server offers it.

Two real SMTP servers (aiosmtpd on 127.0.0.1): one advertises ``DSN`` in its EHLO
answer and accepts the DSN parameters; the other does not advertise it and, like
aiosmtpd itself, refuses any parameter it does not know (555). Each records the exact
``MAIL FROM`` and ``RCPT TO`` parameters it received.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from django.core.mail import EmailMessage
from django.core.mail.backends.smtp import EmailBackend as DjangoEmailBackend

from notify_tracking import notify
from notify_tracking import status as st
from notify_tracking.backends.smtp import EmailBackend
from notify_tracking.channels.email import DSN_NOT_OFFERED

DSN_PARAMETERS = ("RET=", "ENVID=", "NOTIFY=", "ORCPT=")


@dataclass
class Transaction:
    mail_parameters: list[str]
    rcpt_parameters: list[list[str]] = field(default_factory=list)
    content: bytes = b""


class RecordingHandler:
    """Records each transaction's parameters and content; advertises DSN on demand."""

    def __init__(self, advertise_dsn: bool):
        self.advertise_dsn = advertise_dsn
        self.transactions: list[Transaction] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.advertise_dsn:
            responses.insert(len(responses) - 1, "250-DSN")
        return responses

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        self.transactions[-1].content = envelope.original_content or b""
        return "250 OK"


class RecordingSMTP(SMTP):
    """aiosmtpd's server, recording the raw parameters before its own checks."""

    async def smtp_MAIL(self, arg: str) -> None:
        if arg and self.session.extended_smtp:
            self.event_handler.transactions.append(Transaction(_parameters(arg)))
            arg = self._accepted(arg)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        if arg and self.event_handler.transactions:
            self.event_handler.transactions[-1].rcpt_parameters.append(_parameters(arg))
            arg = self._accepted(arg)
        await super().smtp_RCPT(arg)

    def _accepted(self, arg: str) -> str:
        """The command aiosmtpd checks: a DSN server takes the DSN parameters off."""
        if not self.event_handler.advertise_dsn:
            return arg
        words = arg.split(" ")
        return " ".join(w for w in words if not w.upper().startswith(DSN_PARAMETERS))


def _parameters(arg: str) -> list[str]:
    """The ESMTP parameters after the ``FROM:<...>``/``TO:<...>`` address."""
    return arg.split(">", 1)[1].split()


class RecordingController(Controller):
    def factory(self) -> SMTP:
        return RecordingSMTP(self.handler, **self.SMTP_kwargs)


@dataclass
class Server:
    handler: RecordingHandler
    port: int

    @property
    def transactions(self) -> list[Transaction]:
        return self.handler.transactions


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(advertise_dsn: bool) -> Iterator[Server]:
    handler = RecordingHandler(advertise_dsn)
    controller = RecordingController(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield Server(handler, controller.port)
    finally:
        controller.stop()


@pytest.fixture
def dsn_server() -> Iterator[Server]:
    yield from start_server(advertise_dsn=True)


@pytest.fixture
def plain_server() -> Iterator[Server]:
    yield from start_server(advertise_dsn=False)


@pytest.fixture
def through(settings):
    """Send notifications through the app's SMTP backend to the given server."""

    def use(server: Server) -> None:
        settings.EMAIL_BACKEND = "notify_tracking.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = server.port

    return use


def send_notification(task, capture, **kwargs):
    with capture(execute=True):
        notification = notify(task, ["bob@example.net"], subject="Hi", text="Hello.", **kwargs)
    return notification.deliveries.get()


def dsn_part(mail_parameters: list[str]) -> list[str]:
    """The MAIL FROM parameters after the SIZE that smtplib always sends first."""
    size, *rest = mail_parameters
    assert re.fullmatch(r"size=\d+", size), mail_parameters
    return rest


# --- through the whole send: notify() → Celery → channel → backend → server ------------------


def test_a_delivery_report_request_goes_out_on_mail_from_and_rcpt_to(
    task, dsn_server, through, django_capture_on_commit_callbacks
):
    through(dsn_server)

    delivery = send_notification(
        task, django_capture_on_commit_callbacks, request_delivery_report=True
    )

    assert delivery.status == st.SENT
    [transaction] = dsn_server.transactions
    assert dsn_part(transaction.mail_parameters) == ["RET=HDRS", f"ENVID={delivery.token}"]
    assert transaction.rcpt_parameters == [["NOTIFY=SUCCESS,FAILURE,DELAY"]]
    assert f"Message-ID: {delivery.email_message_id}".encode() in transaction.content


def test_no_request_no_dsn_parameters(
    task, dsn_server, through, django_capture_on_commit_callbacks
):
    through(dsn_server)

    delivery = send_notification(
        task, django_capture_on_commit_callbacks, request_delivery_report=False
    )

    assert delivery.status == st.SENT
    [transaction] = dsn_server.transactions
    assert dsn_part(transaction.mail_parameters) == []
    assert transaction.rcpt_parameters == [[]]


def test_a_server_without_dsn_gets_the_message_without_the_parameters(
    task, plain_server, through, django_capture_on_commit_callbacks, caplog
):
    through(plain_server)

    with caplog.at_level(logging.WARNING, logger="notify_tracking.backends.smtp"):
        delivery = send_notification(
            task, django_capture_on_commit_callbacks, request_delivery_report=True
        )

    assert delivery.status == st.SENT
    [transaction] = plain_server.transactions
    assert dsn_part(transaction.mail_parameters) == []
    assert transaction.rcpt_parameters == [[]]
    assert f"127.0.0.1:{plain_server.port} does not advertise DSN" in caplog.text
    assert delivery.email_message_id in caplog.text
    assert str(delivery.token) not in caplog.text  # the token is a tracking key: not logged
    sent_event = delivery.events.get(kind=st.SENT)
    assert sent_event.details["delivery_report"] == DSN_NOT_OFFERED


# --- the backend on its own ---------------------------------------------------------------------


def message(**attributes) -> EmailMessage:
    email = EmailMessage(
        "Hi",
        "Hello.",
        "tracker@example.com",
        ["bob@example.net", "carol@example.org"],
        headers={"Message-ID": "<fixed.1@tracker.example.com>", "Date": "Tue, 3 Jun 2025"},
    )
    for name, value in attributes.items():
        setattr(email, name, value)
    return email


def backend_for(server: Server, backend_class=EmailBackend):
    return backend_class(host="127.0.0.1", port=server.port, fail_silently=False)


def test_every_recipient_gets_notify_and_the_envelope_id_is_xtext(dsn_server):
    email = message(dsn_envelope_id="a+b=c d")

    assert backend_for(dsn_server).send_messages([email]) == 1

    [transaction] = dsn_server.transactions
    assert dsn_part(transaction.mail_parameters) == ["RET=HDRS", "ENVID=a+2Bb+3Dc+20d"]
    assert transaction.rcpt_parameters == [["NOTIFY=SUCCESS,FAILURE,DELAY"]] * 2
    assert email.dsn_requested is True


def test_the_backend_says_on_the_message_when_no_dsn_could_be_asked(plain_server):
    email = message(dsn_envelope_id="6f1c2a9e-3b7d-4c55-9a0e-2d8f1b7c4e01")

    assert backend_for(plain_server).send_messages([email]) == 1

    assert email.dsn_requested is False


def test_one_connection_asks_per_message(dsn_server):
    asking, silent = message(dsn_envelope_id="first"), message()

    assert backend_for(dsn_server).send_messages([asking, silent]) == 2

    first, second = dsn_server.transactions
    assert dsn_part(first.mail_parameters) == ["RET=HDRS", "ENVID=first"]
    assert dsn_part(second.mail_parameters) == []
    assert second.rcpt_parameters == [[], []]
    assert not hasattr(silent, "dsn_requested")


@pytest.mark.parametrize("server_name", ["dsn_server", "plain_server"])
def test_without_a_request_it_sends_exactly_what_djangos_backend_sends(request, server_name):
    server = request.getfixturevalue(server_name)

    backend_for(server, DjangoEmailBackend).send_messages([message()])
    backend_for(server).send_messages([message()])

    django_sent, ours = server.transactions
    assert ours == django_sent
