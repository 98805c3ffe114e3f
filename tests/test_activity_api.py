"""The activity log REST API: permissions, rows, the event timeline, paging, bad input."""

from __future__ import annotations

import base64
import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Group
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from notify_tracking import status as st
from notify_tracking.models import Delivery
from tests.activity_support import make_notification, record

pytestmark = pytest.mark.django_db
LOG = "/notify/api/activity/deliveries/"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "support", "support@example.com", "pw", is_staff=True
    )


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def in_support_group(user) -> bool:
    """A custom ACTIVITY_LOG_PERMISSION: members of the "support" group."""
    return user.groups.filter(name="support").exists()


# --- who may read it ------------------------------------------------------------------


def test_url_names():
    assert reverse("notify_tracking:api-activity") == LOG
    assert reverse("notify_tracking:api-activity-events", kwargs={"pk": 7}) == f"{LOG}7/events/"


def test_anonymous_users_are_refused(client, task):
    make_notification(task, ["a@example.com"])
    response = client.get(LOG)
    assert response.status_code == 403
    assert "a@example.com" not in response.content.decode()


def test_users_who_are_not_staff_are_refused(client, user, task):
    notification = make_notification(task, ["a@example.com"])
    client.force_login(user)
    assert client.get(LOG).status_code == 403
    events_url = reverse(
        "notify_tracking:api-activity-events", kwargs={"pk": notification.deliveries.get().pk}
    )
    assert client.get(events_url).status_code == 403


def test_staff_may_read_it(staff_client, task):
    make_notification(task, ["a@example.com"])
    response = staff_client.get(LOG)
    assert response.status_code == 200
    assert [row["recipient"] for row in response.json()["results"]] == ["a@example.com"]
    assert "private" in response["Cache-Control"]


@override_settings(
    NOTIFY_TRACKING={"ACTIVITY_LOG_PERMISSION": "tests.test_activity_api.in_support_group"}
)
def test_a_custom_rule_opens_it_to_others(client, user, staff, task):
    make_notification(task, ["a@example.com"])
    client.force_login(user)
    assert client.get(LOG).status_code == 403
    user.groups.add(Group.objects.create(name="support"))
    assert client.get(LOG).status_code == 200
    client.force_login(staff)  # staff outside the group: the rule says no
    assert client.get(LOG).status_code == 403
    client.logout()
    assert client.get(LOG).status_code == 403


# --- rows and the timeline ------------------------------------------------------------


def test_a_row_has_what_support_needs(staff_client, task, user):
    notification = make_notification(
        task, ["bounce@example.com"], subject="Fix the login page", sender=user
    )
    delivery = notification.deliveries.get()
    record(delivery, st.SENT)
    record(delivery, st.BOUNCED, source="esp", error="550 5.1.1 mailbox unknown")
    row = staff_client.get(LOG).json()["results"][0]
    assert row["subject"] == "Fix the login page"
    assert row["target"] == f"testapp.task:{task.pk}"
    assert row["sender"] == "alice"
    assert row["recipient"] == "bounce@example.com"
    assert row["channel"] == "email"
    assert row["status"] == "bounced"
    assert row["status_label"] == "Bounced"
    assert row["error"] == "550 5.1.1 mailbox unknown"
    assert row["created_at"] and row["sent_at"] and row["failed_at"]
    assert row["events_url"] == f"http://testserver{LOG}{delivery.pk}/events/"


def test_the_timeline_lists_events_in_time_order(staff_client, task):
    delivery = make_notification(task, ["reader@example.com"]).deliveries.get()
    start = timezone.now() - dt.timedelta(hours=1)
    # Recorded out of order: the timeline is in the order they happened.
    record(
        delivery,
        st.OPENED,
        at=start + dt.timedelta(minutes=30),
        source="pixel",
        user_agent="Mozilla/5.0",
        is_machine=True,
    )
    record(delivery, st.SENT, at=start)
    record(delivery, st.DELIVERED, at=start + dt.timedelta(minutes=1), source="esp")
    row = staff_client.get(LOG).json()["results"][0]
    answer = staff_client.get(row["events_url"]).json()
    assert answer["delivery"]["id"] == delivery.pk
    assert answer["delivery"]["status"] == "delivered"  # an automated open does not count
    assert [event["kind"] for event in answer["events"]] == ["sent", "delivered", "opened"]
    assert [event["source"] for event in answer["events"]] == ["channel", "esp", "pixel"]
    assert [event["is_machine"] for event in answer["events"]] == [False, False, True]
    assert answer["events"][2]["user_agent"] == "Mozilla/5.0"
    assert answer["truncated"] is False


def test_the_timeline_gives_the_reason_of_a_failure(staff_client, task):
    delivery = make_notification(task, ["gone@example.com"]).deliveries.get()
    record(delivery, st.DEFERRED, error="421 try again later")
    record(delivery, st.FAILED, error="gave up after 5 attempts")
    events = staff_client.get(f"{LOG}{delivery.pk}/events/").json()["events"]
    assert [event["reason"] for event in events] == [
        "421 try again later",
        "gave up after 5 attempts",
    ]


def test_the_timeline_of_a_missing_delivery_is_404(staff_client):
    assert staff_client.get(f"{LOG}999999/events/").status_code == 404
    assert staff_client.get(f"{LOG}{'9' * 30}/events/").status_code == 404


def test_a_page_costs_the_same_queries_for_many_rows(
    staff_client, task, django_assert_max_num_queries
):
    for index in range(3):
        make_notification(task, [f"few{index}@example.com"])
    with django_assert_max_num_queries(6) as few:
        staff_client.get(LOG)
    for index in range(30):
        make_notification(task, [f"many{index}@example.com"])
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(staff_client.get(LOG).json()["results"]) == 33


def test_filters_apply(staff_client, task):
    make_notification(task, ["alice@example.com", "bob@example.com"])
    response = staff_client.get(LOG, {"recipient_prefix": "bo"})
    assert [row["recipient"] for row in response.json()["results"]] == ["bob@example.com"]


def test_the_address_is_searched_in_any_case(staff_client, task):
    make_notification(task, ["Alice@Example.com", "a_b@example.com", "axb@example.com"])

    def found(params):
        response = staff_client.get(LOG, params)
        assert response.status_code == 200, response.content
        return sorted(row["recipient"] for row in response.json()["results"])

    assert found({"recipient": "alice@example.com"}) == ["Alice@Example.com"]
    assert found({"recipient": "ALICE@EXAMPLE.COM"}) == ["Alice@Example.com"]
    assert found({"recipient_prefix": "aLiCe@"}) == ["Alice@Example.com"]
    # '_' and '%' typed by support are the characters themselves, not wildcards.
    assert found({"recipient_prefix": "A_"}) == ["a_b@example.com"]
    assert found({"recipient": "A%B@example.com"}) == []
    assert found({"recipient_prefix": "%"}) == []


# --- paging ------------------------------------------------------------------------------


def pages(client, url, params=None) -> list[list[str]]:
    seen = []
    response = client.get(url, params or {})
    while True:
        assert response.status_code == 200, response.content
        body = response.json()
        seen.append([row["recipient"] for row in body["results"]])
        if not body["next"]:
            return seen
        response = client.get(body["next"])


def test_cursor_pages_cover_every_row_once_newest_first(staff_client, task):
    for index in range(7):
        make_notification(task, [f"user{index}@example.com"])
    seen = pages(staff_client, LOG, {"page_size": 3})
    assert [len(page) for page in seen] == [3, 3, 1]
    assert [address for page in seen for address in page] == [
        f"user{index}@example.com" for index in reversed(range(7))
    ]


def test_rows_queued_at_the_same_instant_are_neither_lost_nor_repeated(staff_client, task):
    make_notification(task, [f"same{index}@example.com" for index in range(8)])
    Delivery.objects.update(created_at=timezone.now())
    seen = pages(staff_client, LOG, {"page_size": 3})
    flat = [address for page in seen for address in page]
    assert sorted(flat) == sorted(f"same{index}@example.com" for index in range(8))


def test_default_page_size_comes_from_the_setting(staff_client, task):
    make_notification(task, [f"u{index}@example.com" for index in range(4)])
    with override_settings(NOTIFY_TRACKING={"ACTIVITY_PAGE_SIZE": 2}):
        assert len(staff_client.get(LOG).json()["results"]) == 2


@pytest.mark.parametrize("size", ["501", "0", "-1", "abc", "1e3", "9" * 5000, "٣"])
def test_a_bad_page_size_is_400(staff_client, size):
    response = staff_client.get(LOG, {"page_size": size})
    assert response.status_code == 400
    assert "from 1 to 500" in response.json()["page_size"][0]


def test_the_largest_page_size_is_accepted(staff_client):
    assert staff_client.get(LOG, {"page_size": "500"}).status_code == 200


def forged_cursor(query: str) -> str:
    return base64.b64encode(query.encode()).decode()


@pytest.mark.parametrize(
    "cursor", ["garbage", forged_cursor("o=0&r=0&p=not-a-date"), forged_cursor("o=x")]
)
def test_a_bad_cursor_is_400(staff_client, cursor):
    response = staff_client.get(LOG, {"cursor": cursor})
    assert response.status_code == 400
    assert "cursor" in response.json()


def test_a_next_link_keeps_the_filters(staff_client, task):
    make_notification(task, [f"bo{index}@example.com" for index in range(3)] + ["al@example.com"])
    first = staff_client.get(LOG, {"recipient_prefix": "bo", "page_size": 2}).json()
    assert parse_qs(urlsplit(first["next"]).query)["recipient_prefix"] == ["bo"]
    assert pages(staff_client, LOG, {"recipient_prefix": "bo", "page_size": 2})[1] == [
        "bo0@example.com"
    ]


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-02-30"}, "until"),
        ({"status": "lost"}, "status"),
        ({"target": "nope"}, "target"),
        ({"recipient": "a\x00b"}, "recipient"),
        ({"recipent": "typo@example.com"}, "recipent"),
        ({"recipient_prefix": "%' OR 1=1 --"}, None),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(staff_client, params, name):
    response = staff_client.get(LOG, params)
    if name is None:  # odd characters are searched for literally: no error, no match
        assert response.status_code == 200
        assert response.json()["results"] == []
    else:
        assert response.status_code == 400
        assert list(response.json()) == [name]


def test_the_openapi_schema_describes_the_log_and_its_filters():
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    assert not GENERATOR_STATS  # no warning nor error
    log = schema["paths"]["/notify/api/activity/deliveries/"]["get"]
    names = {parameter["name"] for parameter in log["parameters"]}
    assert names >= {"recipient", "recipient_prefix", "target", "since", "cursor", "page_size"}
    assert "/notify/api/activity/deliveries/{id}/events/" in schema["paths"]
    assert set(schema["paths"]["/notify/api/preferences/"]) >= {"get", "put", "patch"}
