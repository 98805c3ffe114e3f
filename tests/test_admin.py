"""The admin: pages render, search and filters work, and nothing scans or costs per row."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import translation

from notify_tracking import notify, record_event
from notify_tracking import status as st
from notify_tracking.admin import (
    CappedCountPaginator,
    DeliveryAdmin,
    NotificationAdmin,
    NotificationInline,
)
from notify_tracking.models import Delivery, Notification
from tests.status_factories import notify_with_statuses
from tests.testapp.models import Task

pytestmark = pytest.mark.django_db

DELIVERIES = "/admin/notify_tracking/delivery/"
NOTIFICATIONS = "/admin/notify_tracking/notification/"


class TaskAdmin(admin.ModelAdmin):
    inlines = [NotificationInline]


# A site of the host's own beside admin.site, with the app's pages on it too.
host_site = admin.AdminSite(name="host_admin")
host_site.register(Task, TaskAdmin)
host_site.register(Delivery, DeliveryAdmin)
host_site.register(Notification, NotificationAdmin)
# Sites that leave some of the app's pages to admin.site.
task_site = admin.AdminSite(name="task_admin")
task_site.register(Task, TaskAdmin)
delivery_site = admin.AdminSite(name="delivery_admin")
delivery_site.register(Delivery, DeliveryAdmin)
urlpatterns = [
    path("notify/", include("notify_tracking.urls")),
    path("admin/", admin.site.urls),
    path("host-admin/", host_site.urls),
    path("task-admin/", task_site.urls),
    path("delivery-admin/", delivery_site.urls),
]


def _make_deliveries(count: int) -> None:
    statuses = [(st.OPENED, st.BOUNCED, st.SENT, st.DEFERRED)[i % 4] for i in range(count)]
    for start in range(0, count, 10):
        task = Task.objects.create(title=f"Task {start}")
        notify_with_statuses(task, statuses[start : start + 10], subject=f"Task {start} changed")


def _changelist_queries(admin_client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(url)
    assert response.status_code == 200
    return [query["sql"] for query in captured.captured_queries]


@pytest.mark.parametrize("url", [DELIVERIES, NOTIFICATIONS])
def test_changelist_queries_do_not_grow_with_rows(admin_client, url):
    _make_deliveries(2)
    admin_client.get(url)  # warm the session and the content type cache
    few = _changelist_queries(admin_client, url)
    _make_deliveries(48)

    many = _changelist_queries(admin_client, url)

    assert len(Delivery.objects.all()) == 50
    assert len(many) == len(few)


def test_changelists_never_count_the_whole_table(admin_client):
    _make_deliveries(12)

    for url in (DELIVERIES, NOTIFICATIONS, DELIVERIES + "?status__exact=opened"):
        counts = [sql for sql in _changelist_queries(admin_client, url) if "COUNT(" in sql]
        assert counts, "the paginator counts"
        assert all("LIMIT" in sql for sql in counts), counts


def test_count_past_the_limit_reads_as_a_floor(admin_client, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "limit", 5)
    _make_deliveries(8)

    page = admin_client.get(DELIVERIES).content.decode()

    assert re.search(r"5\+\s+deliveries", page)


def test_delivery_changelist_shows_columns(admin_client):
    _make_deliveries(4)

    page = admin_client.get(DELIVERIES).content.decode()

    assert "user0@example.com" in page
    assert "Task 0 changed" in page
    assert "550 mailbox unavailable" in page
    assert "Delayed" in page


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("user1@example.com", {"user1@example.com"}),
        ("User1@Example.COM", {"user1@example.com"}),  # an address in any case
        ("user1", {"user1@example.com", "user10@example.com", "user11@example.com"}),
        ("USER1", {"user1@example.com", "user10@example.com", "user11@example.com"}),
        ("Weekly", {"zed@example.org"}),
        ("weekly", {"zed@example.org"}),
        ("example.com", set()),
    ],
)
def test_search_by_whole_address_or_prefix(admin_client, term, expected):
    notify_with_statuses(Task.objects.create(title="t"), [st.SENT] * 12, subject="Login broken")
    notify(Task.objects.create(title="u"), ["zed@example.org"], subject="Weekly digest", text="x")

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(DELIVERIES, {"q": term})

    assert {delivery.recipient for delivery in response.context["cl"].result_list} == expected
    sql = [
        query["sql"]
        for query in captured.captured_queries
        if "notify_tracking_delivery" in query["sql"]
    ]
    assert not any("LIKE '%" in query for query in sql), sql


def test_filters_by_status_channel_and_date(admin_client):
    _make_deliveries(8)

    by_status = admin_client.get(f"{DELIVERIES}?status__exact=bounced").content.decode()
    by_channel = admin_client.get(f"{DELIVERIES}?channel=email")
    by_date = admin_client.get(f"{DELIVERIES}?created_at__gte=2000-01-01+00:00:00%2B00:00")

    assert "550 mailbox unavailable" in by_status
    assert "421 try again later" not in by_status
    assert by_channel.status_code == 200 and "user0@example.com" in by_channel.content.decode()
    assert by_date.status_code == 200 and "user7@example.com" in by_date.content.decode()


def test_delivery_page_shows_the_event_timeline_read_only(admin_client):
    notification = notify_with_statuses(Task.objects.create(title="t"), [st.CLICKED])
    delivery = notification.deliveries.get()
    record_event(delivery, st.OPENED, source="pixel", is_machine=True)

    response = admin_client.get(f"{DELIVERIES}{delivery.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert 'class="nt-timeline"' in page
    for text in ("Tracking pixel", "Tracked link", "https://example.com/tasks/1", "Send result"):
        assert text in page
    assert 'name="_save"' not in page


def test_a_deliverys_title_names_its_status_as_people_read_it(admin_client):
    notification = notify_with_statuses(Task.objects.create(title="t"), [st.OPENED])
    delivery = notification.deliveries.get()

    with translation.override("ru"):
        russian = str(delivery)
    page = admin_client.get(f"{DELIVERIES}{delivery.pk}/change/").content.decode()

    assert russian == f"{delivery.recipient} (email): Прочитано"
    assert f"<title>{delivery.recipient} (email): Read |" in page


def test_notification_page_lists_its_deliveries(admin_client):
    notification = notify_with_statuses(Task.objects.create(title="t"), [st.OPENED, st.FAILED])

    response = admin_client.get(f"{NOTIFICATIONS}{notification.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "user0@example.com" in page and "user1@example.com" in page
    assert "550 mailbox unavailable" in page


def test_nothing_can_be_added(admin_client):
    assert admin_client.get(f"{DELIVERIES}add/").status_code == 403
    assert admin_client.get(f"{NOTIFICATIONS}add/").status_code == 403


@pytest.mark.urls("tests.test_admin")
def test_host_admin_inline_shows_notification_statuses(admin_client):
    task = Task.objects.create(title="Host task")
    notify_with_statuses(task, [st.OPENED, st.OPENED, st.DELIVERED], subject="First")
    notify_with_statuses(task, [st.BOUNCED], subject="Second")

    response = admin_client.get(f"/host-admin/testapp/task/{task.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "Read by 2 of 3" in page
    assert "Error" in page
    assert f"?notification={Notification.objects.get(subject='First').pk}" in page


@pytest.mark.urls("tests.test_admin")
def test_links_stay_on_the_hosts_own_admin_site(admin_client):
    task = Task.objects.create(title="Host task")
    notify_with_statuses(task, [st.OPENED])
    notification = Notification.objects.get()
    delivery = notification.deliveries.get()

    inline = admin_client.get(f"/host-admin/testapp/task/{task.pk}/change/").content.decode()
    change = admin_client.get(f"/host-admin/notify_tracking/delivery/{delivery.pk}/change/")

    assert f'href="/host-admin/notify_tracking/delivery/?notification={notification.pk}"' in inline
    assert 'href="/admin/notify_tracking/' not in inline
    page = change.content.decode()
    assert f'href="/host-admin/notify_tracking/notification/{notification.pk}/change/"' in page
    assert f'href="/admin/notify_tracking/notification/{notification.pk}/change/"' not in page


@pytest.mark.urls("tests.test_admin")
def test_links_go_to_admin_site_for_the_pages_a_hosts_site_leaves_to_it(admin_client):
    task = Task.objects.create(title="Host task")
    notify_with_statuses(task, [st.OPENED])
    notification = Notification.objects.get()
    delivery = notification.deliveries.get()

    inline = admin_client.get(f"/task-admin/testapp/task/{task.pk}/change/").content.decode()
    change = admin_client.get(f"/delivery-admin/notify_tracking/delivery/{delivery.pk}/change/")

    assert f'href="/admin/notify_tracking/delivery/?notification={notification.pk}"' in inline
    assert change.status_code == 200
    page = change.content.decode()
    assert f'href="/admin/notify_tracking/notification/{notification.pk}/change/"' in page


@pytest.mark.urls("tests.urls_two_admin_sites")
def test_links_never_go_to_a_third_site(admin_client):
    """Without admin.site, Django's reverse() would pick any site for "admin:…"."""
    task = Task.objects.create(title="Host task")
    notify_with_statuses(task, [st.OPENED, st.SENT])

    inline = admin_client.get(f"/staff/testapp/task/{task.pk}/change/").content.decode()

    assert "Read by 1 of 2" in inline
    assert "/super/" not in inline


@pytest.mark.urls("tests.test_admin")
def test_host_admin_inline_costs_the_same_for_many_notifications(admin_client):
    task = Task.objects.create(title="Host task")
    url = f"/host-admin/testapp/task/{task.pk}/change/"
    notify_with_statuses(task, [st.OPENED])
    admin_client.get(url)
    with CaptureQueriesContext(connection) as one:
        admin_client.get(url)
    for _ in range(9):
        notify_with_statuses(task, [st.OPENED, st.SENT])

    with CaptureQueriesContext(connection) as ten:
        response = admin_client.get(url)

    assert response.content.decode().count("Read by 1 of 2") == 9
    assert len(ten) == len(one)
