"""The app with a user model as many projects have one: a UUID pk, the email as the
login, no username (tests/hosts/uuid_user). Run apart, by ``make test``:
``pytest --ds=tests.hosts.settings_uuid_user tests/hosts/uuid_user_checks.py``.
"""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.template import Context, Template
from django.test import RequestFactory
from django.urls import reverse

from notify_tracking import notify, record_event, summary
from notify_tracking.models import Delivery, TrackingPreference

pytestmark = pytest.mark.django_db

HTML = '<html><body><p>See <a href="https://tracker.example.com/t/1">the task</a></p></body></html>'
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture
def users():
    user_model = get_user_model()
    return {
        "sender": user_model.objects.create_user("sam@example.com", "pw", full_name="Sam"),
        "bob": user_model.objects.create_user("bob@example.com", "pw"),
        "staff": user_model.objects.create_superuser("staff@example.com", "pw"),
    }


@pytest.fixture
def sent(task, users, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return notify(
            task,
            [users["bob"], "carol@example.com"],
            subject="Build failed",
            text="t",
            html=HTML,
            sender=users["sender"],
        )


def test_the_user_model_is_the_hosts():
    assert get_user_model()._meta.label == "uuid_user.User"
    assert isinstance(get_user_model()._meta.pk, type(Delivery._meta.get_field("token")))


def test_users_are_notified_and_the_sender_is_known(sent, users, task):
    assert Delivery.objects.get(user=users["bob"]).status == "sent"
    assert len(mail.outbox) == 2
    status = summary(task)
    assert status["sender_ids"] == [users["sender"].pk]
    assert isinstance(status["sender_ids"][0], uuid.UUID)


def test_the_sender_sees_the_popup_with_every_address(sent, users, task, client):
    client.force_login(users["sender"])
    url = reverse("notify_tracking:status-badge", args=["testapp.task", task.pk])
    response = client.get(url)
    assert response.status_code == 200
    assert "carol@example.com" in response.content.decode()


def test_the_badge_tag_shows_the_sender_every_address(sent, users, task):
    request = RequestFactory().get("/")
    request.user = users["sender"]
    html = Template("{% load notify_tracking %}{% delivery_badge task %}").render(
        Context({"task": task, "request": request})
    )
    assert "carol@example.com" in html


def test_the_status_api_answers_the_sender(sent, users, task, client):
    client.force_login(users["sender"])
    response = client.get(reverse("notify_tracking:api-status", args=["testapp.task", task.pk]))
    assert response.status_code == 200
    recipients = {delivery["recipient"] for delivery in response.json()["deliveries"]}
    assert recipients == {"bob@example.com", "carol@example.com"}


@pytest.mark.parametrize("sender", ["sam@example.com", "pk"])
def test_the_activity_log_finds_a_sender_by_email_or_pk(sent, users, client, sender):
    client.force_login(users["staff"])
    value = str(users["sender"].pk) if sender == "pk" else sender
    response = client.get(reverse("notify_tracking:api-activity"), {"sender": value})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 2


def test_the_sender_is_told_of_a_read(task, users, django_capture_on_commit_callbacks):
    TrackingPreference.objects.create(user=users["sender"], read_notice="instant")
    with django_capture_on_commit_callbacks(execute=True):
        notify(task, ["bob@example.com"], subject="s", text="t", html=HTML, sender=users["sender"])
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        record_event(Delivery.objects.get(), "opened", source="pixel", user_agent=FIREFOX)
    assert [message.to for message in mail.outbox] == [["sam@example.com"]]


def test_the_status_command_names_the_sender(sent):
    out = StringIO()
    call_command("notify_tracking_status", "bob@example.com", stdout=out)
    assert "sender: sam@example.com" in out.getvalue()
