"""Per-user tracking preferences: the form, the REST endpoint, and their effect on notify()."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core import mail
from django.test import override_settings

from notify_tracking import notify
from notify_tracking.models import TrackingPreference

pytestmark = pytest.mark.django_db
FORM = "/notify/preferences/"
API = "/notify/api/preferences/"
DEFAULTS = {
    "request_delivery_reports": False,
    "request_read_receipts": False,
    "read_notice": "never",
    "allow_tracking": True,
}


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "pw")


# --- the form -----------------------------------------------------------------------------


def test_the_form_needs_a_signed_in_user(client):
    response = client.get(FORM)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/notify/preferences/")


def test_the_form_shows_the_defaults_without_saving_anything(client, user):
    client.force_login(user)
    response = client.get(FORM)
    assert response.status_code == 200
    page = response.content.decode()
    assert "<!DOCTYPE html>" in page
    assert 'name="request_read_receipts"' in page
    assert 'name="read_notice"' in page
    assert 'value="never" selected' in page
    assert not TrackingPreference.objects.exists()


def test_saving_the_form_stores_the_current_users_choices(client, user, bob):
    client.force_login(user)
    response = client.post(
        FORM,
        {"request_read_receipts": "on", "read_notice": "digest", "user": bob.pk},
        follow=True,
    )
    assert response.redirect_chain == [(FORM, 302)]
    assert "Your notification preferences were saved." in response.content.decode()
    preference = TrackingPreference.objects.get()
    assert preference.user == user  # a posted "user" is ignored
    assert preference.request_read_receipts is True
    assert preference.read_notice == "digest"
    assert preference.allow_tracking is False  # an unticked box is a no


def test_saving_works_in_a_host_without_the_messages_framework(client, user):
    without_messages = [m for m in settings.MIDDLEWARE if "messages" not in m]
    with override_settings(MIDDLEWARE=without_messages):
        client.force_login(user)
        response = client.post(FORM, {"read_notice": "digest"})
    assert (response.status_code, response["Location"]) == (302, FORM)
    assert TrackingPreference.objects.get(user=user).read_notice == "digest"


def test_an_invalid_choice_is_shown_and_nothing_saved(client, user):
    client.force_login(user)
    response = client.post(FORM, {"read_notice": "hourly"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not TrackingPreference.objects.exists()


HOST_BASE = "<main id='host-site'>{% block content %}{% endblock %}</main>"


@override_settings(
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ],
                "loaders": [
                    (
                        "django.template.loaders.locmem.Loader",
                        {"notify_tracking/preferences/base.html": HOST_BASE},
                    ),
                    "django.template.loaders.app_directories.Loader",
                ],
            },
        }
    ]
)
def test_a_host_project_can_override_the_base_template(client, user):
    client.force_login(user)
    page = client.get(FORM).content.decode()
    assert page.startswith("<main id='host-site'>")
    assert 'name="allow_tracking"' in page


# --- the REST endpoint -----------------------------------------------------------------------


def test_the_endpoint_needs_a_signed_in_user(client):
    assert client.get(API).status_code == 403
    assert (
        client.patch(API, {"allow_tracking": False}, content_type="application/json").status_code
        == 403
    )


def test_get_returns_the_defaults_without_saving(client, user):
    client.force_login(user)
    response = client.get(API)
    assert response.status_code == 200
    assert response.json() == DEFAULTS
    assert not TrackingPreference.objects.exists()


def test_put_and_patch_change_only_the_current_users_preferences(client, user, bob):
    TrackingPreference.objects.create(user=bob, read_notice="instant")
    client.force_login(user)
    put = client.put(
        API,
        {**DEFAULTS, "read_notice": "instant", "allow_tracking": False},
        content_type="application/json",
    )
    assert put.status_code == 200
    assert put.json() == {**DEFAULTS, "read_notice": "instant", "allow_tracking": False}
    patch = client.patch(API, {"request_delivery_reports": True}, content_type="application/json")
    assert patch.json() == {
        **DEFAULTS,
        "read_notice": "instant",
        "allow_tracking": False,
        "request_delivery_reports": True,
    }
    assert client.get(API).json() == patch.json()
    assert TrackingPreference.objects.get(user=bob).allow_tracking is True


def test_a_bad_value_is_a_400_naming_the_field(client, user):
    client.force_login(user)
    response = client.patch(API, {"read_notice": "hourly"}, content_type="application/json")
    assert response.status_code == 400
    assert list(response.json()) == ["read_notice"]
    assert not TrackingPreference.objects.exists()


# --- the effect on notify() ---------------------------------------------------------------------


def test_a_read_receipt_asked_for_through_the_endpoint_is_requested_by_the_next_notify(
    client, user, task, django_capture_on_commit_callbacks
):
    before = notify(task, ["reader@example.com"], text="before", sender=user)
    assert before.request_read_receipt is False

    client.force_login(user)
    response = client.patch(API, {"request_read_receipts": True}, content_type="application/json")
    assert response.status_code == 200

    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        after = notify(task, ["reader@example.com"], text="after", sender=user)
    assert after.request_read_receipt is True
    assert [message.body for message in mail.outbox] == ["after"]
    sent = mail.outbox[0].message()
    assert sent["Disposition-Notification-To"] == "tracker@example.com"


def test_a_recipient_who_refuses_tracking_through_the_form_is_not_tracked(client, bob, task):
    client.force_login(bob)
    client.post(FORM, {"read_notice": "never"})  # allow_tracking unticked
    notification = notify(task, [bob], text="hello")
    delivery = notification.deliveries.get()
    assert (delivery.track_opens, delivery.track_clicks) == (False, False)
