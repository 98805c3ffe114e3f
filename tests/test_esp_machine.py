"""Providers that flag automated opens (SendGrid, Mailgun, Brevo), through their real
anymail webhook views: a flagged open is stored as automated and does not make the
delivery read; an unflagged one does."""

import pytest
from django.test import override_settings

from notify_tracking.models import DeliveryEvent
from tests.esp_payloads import (
    NOW,
    brevo_event,
    mailgun_event,
    post_brevo,
    post_mailgun,
    post_sendgrid,
    send,
    sendgrid_event,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari"


@pytest.fixture
def delivery(task, django_capture_on_commit_callbacks):
    (delivery,) = send(task, ["bob@example.com"], django_capture_on_commit_callbacks)
    return delivery


def opens(delivery):
    return list(DeliveryEvent.objects.filter(delivery=delivery, source="esp", kind="opened"))


def client_info(bot="", client_type="browser", user_agent=BROWSER):
    return {
        "client-name": "Safari",
        "client-type": client_type,
        "client-os": "macOS",
        "device-type": "desktop",
        "user-agent": user_agent,
        "bot": bot,
    }


@pytest.mark.parametrize(
    ("post", "flagged", "reason"),
    [
        (
            lambda c, d: post_sendgrid(
                c, [sendgrid_event(d, "open", NOW + 5, sg_machine_open=True, useragent=BROWSER)]
            ),
            True,
            "sg_machine_open=true",
        ),
        (
            lambda c, d: post_mailgun(
                c, mailgun_event(d, "opened", NOW + 5, **{"client-info": client_info(bot="apple")})
            ),
            True,
            "client-info.bot=apple",
        ),
        (
            lambda c, d: post_mailgun(
                c,
                mailgun_event(
                    d, "opened", NOW + 5, **{"client-info": client_info(client_type="robot")}
                ),
            ),
            True,
            "client-info.client-type=robot",
        ),
        (
            lambda c, d: post_brevo(c, brevo_event(d, "proxy_open", NOW * 1000 + 5000)),
            True,
            "event=proxy_open",
        ),
        (
            lambda c, d: post_brevo(c, brevo_event(d, "unique_proxy_open", NOW * 1000 + 5000)),
            True,
            "event=unique_proxy_open",
        ),
        (
            lambda c, d: post_sendgrid(
                c, [sendgrid_event(d, "open", NOW + 5, sg_machine_open=False, useragent=BROWSER)]
            ),
            False,
            "",
        ),
        (
            lambda c, d: post_mailgun(
                c, mailgun_event(d, "opened", NOW + 5, **{"client-info": client_info(bot="")})
            ),
            False,
            "",
        ),
        (
            lambda c, d: post_brevo(c, brevo_event(d, "unique_opened", NOW * 1000 + 5000)),
            False,
            "",
        ),
    ],
    ids=[
        "sendgrid-machine",
        "mailgun-bot",
        "mailgun-robot",
        "brevo-proxy",
        "brevo-unique-proxy",
        "sendgrid-human",
        "mailgun-human",
        "brevo-human",
    ],
)
def test_provider_machine_flags(
    post, flagged, reason, delivery, client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, delivery).status_code == 200

    (event,) = opens(delivery)
    assert event.is_machine is flagged
    assert event.details.get("esp_flag", "") == reason
    assert event.details.get("machine_reason", "") == ("esp_flag" if flagged else "")
    delivery.refresh_from_db()
    expected = ("sent", 0, 1) if flagged else ("opened", 1, 0)
    assert (delivery.status, delivery.open_count, delivery.machine_open_count) == expected


def test_a_mailgun_bot_click_is_automated_too(delivery, client, django_capture_on_commit_callbacks):
    payload = mailgun_event(
        delivery,
        "clicked",
        NOW + 5,
        url="https://tracker.example.com/tasks/1",
        **{"client-info": client_info(bot="generic")},
    )
    with django_capture_on_commit_callbacks(execute=True):
        post_mailgun(client, payload)

    (event,) = DeliveryEvent.objects.filter(delivery=delivery, source="esp")
    assert (event.kind, event.is_machine, event.details["esp_flag"]) == (
        "clicked",
        True,
        "client-info.bot=generic",
    )
    delivery.refresh_from_db()
    assert (delivery.status, delivery.machine_click_count) == ("sent", 1)


def test_without_a_provider_flag_the_apps_user_agent_rules_decide(
    delivery, client, django_capture_on_commit_callbacks
):
    scanner = sendgrid_event(delivery, "open", NOW + 5, useragent="Mozilla/5.0")  # Apple's proxy
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [scanner])

    (event,) = opens(delivery)
    assert event.is_machine is True
    assert event.details["machine_reason"] == "apple_mpp"


def test_counting_machine_opens_makes_a_flagged_open_a_read(
    delivery, client, django_capture_on_commit_callbacks
):
    flagged = sendgrid_event(delivery, "open", NOW + 5, sg_machine_open=True, useragent=BROWSER)
    with override_settings(NOTIFY_TRACKING={"COUNT_MACHINE_OPENS": True}):
        with django_capture_on_commit_callbacks(execute=True):
            post_sendgrid(client, [flagged])
        delivery.refresh_from_db()

    (event,) = opens(delivery)
    assert event.is_machine is True
    assert (delivery.status, delivery.open_count, delivery.machine_open_count) == ("opened", 1, 1)
