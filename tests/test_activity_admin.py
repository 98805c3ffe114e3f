"""The activity log page in the Django admin."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.contrib.auth.models import Permission
from django.test import override_settings
from django.urls import reverse

from notify_tracking import status as st
from notify_tracking.activity.admin_views import PAGE_SIZE
from notify_tracking.models import Delivery
from tests.activity_support import make_notification, record

pytestmark = pytest.mark.django_db
PAGE = "/admin/notify_tracking/delivery/activity/"


def never(user) -> bool:
    return False


@pytest.fixture
def support(django_user_model):
    user = django_user_model.objects.create_user("support", "s@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    return user


@pytest.fixture
def support_client(client, support):
    client.force_login(support)
    return client


def links(page: str, text: str) -> list[str]:
    return [unescape(href) for href in re.findall(rf'<a href="([^"]*)"[^>]*>{text}', page)]


def test_the_url_name():
    assert reverse("admin:notify_tracking_delivery_activity") == PAGE


def test_anonymous_users_go_to_the_admin_login(client):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_staff_without_the_view_permission_are_refused(client, django_user_model):
    staff = django_user_model.objects.create_user("s2", "s2@example.com", "pw", is_staff=True)
    client.force_login(staff)
    assert client.get(PAGE).status_code == 403


@override_settings(NOTIFY_TRACKING={"ACTIVITY_LOG_PERMISSION": "tests.test_activity_admin.never"})
def test_the_activity_permission_applies_too(support_client):
    assert support_client.get(PAGE).status_code == 403


def test_the_page_lists_matching_deliveries_with_links(support_client, task):
    notification = make_notification(
        task, ["alice@example.com", "bob@example.com"], subject="Fix the login page"
    )
    bob = notification.deliveries.get(recipient="bob@example.com")
    record(bob, st.SENT, st.BOUNCED, error="550 unknown user")
    response = support_client.get(PAGE, {"recipient_prefix": "bo", "status": ""})
    assert response.status_code == 200
    page = response.content.decode()
    assert "bob@example.com" in page
    assert "alice@example.com" not in page
    assert "550 unknown user" in page
    assert f"testapp.task:{task.pk}" in page
    change_url = reverse("admin:notify_tracking_delivery_change", args=[bob.pk])
    assert f'href="{change_url}"' in page
    assert links(page, "Export as CSV") == ["/notify/activity/deliveries.csv?recipient_prefix=bo"]
    csv_text = b"".join(support_client.get(links(page, "Export as CSV")[0]).streaming_content)
    assert b"bob@example.com" in csv_text and b"alice@example.com" not in csv_text


def test_bad_input_is_shown_with_the_parameter_named(support_client):
    response = support_client.get(PAGE, {"since": "last tuesday", "before": "x"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "<strong>since</strong>" in page
    assert "<strong>before</strong>" in page


def test_older_deliveries_are_a_link_away(support_client, task):
    make_notification(task, [f"user{index}@example.com" for index in range(PAGE_SIZE + 5)])
    first = support_client.get(PAGE, {"recipient_prefix": "user"}).content.decode()
    assert first.count("@example.com</td>") == PAGE_SIZE
    (older,) = links(first, "Older deliveries")
    assert "recipient_prefix=user" in older
    second = support_client.get(PAGE + older).content.decode()
    assert second.count("@example.com</td>") == 5
    assert links(second, "Older deliveries") == []
    shown = set(re.findall(r"<td>(user\d+@example.com)</td>", first + second))
    assert shown == set(Delivery.objects.values_list("recipient", flat=True))


def test_nothing_found_says_so(support_client):
    page = support_client.get(PAGE, {"recipient": "nobody@example.com"}).content.decode()
    assert "the app never accepted a message for it" in page


def test_the_deliveries_changelist_links_to_the_page(support_client):
    page = support_client.get(reverse("admin:notify_tracking_delivery_changelist")).content
    assert links(page.decode(), "Activity log") == [PAGE]
