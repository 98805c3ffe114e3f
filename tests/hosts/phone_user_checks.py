"""The app with a user model that has no email field: the phone number is the login
(tests/hosts/phone_user). Run apart, by ``make test``:
``pytest --ds=tests.hosts.settings_phone_user tests/hosts/phone_user_checks.py``.
"""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from notify_tracking import notify

pytestmark = pytest.mark.django_db


@pytest.fixture
def users():
    user_model = get_user_model()
    return {
        "sender": user_model.objects.create_user("+200", "pw"),
        "staff": user_model.objects.create_superuser("+100", "pw"),
    }


@pytest.fixture
def sent(task, users, django_capture_on_commit_callbacks):
    """One notification from the phone user, one from nobody."""
    with django_capture_on_commit_callbacks(execute=True):
        notify(task, ["bob@example.com"], subject="s", text="t", sender=users["sender"])
        notify(task, ["carol@example.com"], subject="s", text="t")


def test_the_user_model_has_no_email_field():
    user_model = get_user_model()
    assert user_model._meta.label == "phone_user.User"
    assert "email" not in {field.name for field in user_model._meta.get_fields()}
    assert user_model.get_email_field_name() == "email"  # Django's default, all the same


@pytest.mark.parametrize("sender", ["+200", "pk"])
def test_the_activity_api_finds_a_sender_by_login_or_pk(sent, users, client, sender):
    client.force_login(users["staff"])
    value = str(users["sender"].pk) if sender == "pk" else sender
    response = client.get(reverse("notify_tracking:api-activity"), {"sender": value})
    assert response.status_code == 200
    assert [row["recipient"] for row in response.json()["results"]] == ["bob@example.com"]


def test_the_csv_export_filters_by_sender(sent, users, client):
    client.force_login(users["staff"])
    response = client.get(reverse("notify_tracking:activity-export"), {"sender": "+200"})
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    assert [row["recipient"] for row in csv.DictReader(io.StringIO(text))] == ["bob@example.com"]


def test_the_admin_activity_page_filters_by_sender(sent, users, client):
    client.force_login(users["staff"])
    response = client.get(reverse("admin:notify_tracking_delivery_activity"), {"sender": "+200"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "bob@example.com" in page
    assert "carol@example.com" not in page


def test_a_user_without_an_address_is_refused_by_name(task, users):
    with pytest.raises(ValueError, match="no address for channel 'email'"):
        notify(task, [users["sender"]], subject="s", text="t")
