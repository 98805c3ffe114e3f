"""The REST API: what each kind of user sees, 404 for hidden targets, caching, queries."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from notify_tracking import record_event
from notify_tracking import status as st
from notify_tracking.checks import check_settings
from notify_tracking.models import Notification
from tests.status_factories import notify_with_statuses
from tests.testapp.models import Comment, Task, Ticket, UUIDTask

pytestmark = pytest.mark.django_db


def detail_url(target) -> str:
    meta = target._meta
    return reverse(
        "notify_tracking:api-status",
        kwargs={"target_type": f"{meta.app_label}.{meta.model_name}", "pk": str(target.pk)},
    )


def list_url(*targets, extra: str = "") -> str:
    keys = [f"{t._meta.app_label}.{t._meta.model_name}:{t.pk}" for t in targets]
    return reverse("notify_tracking:api-status-list") + "?targets=" + ",".join(keys) + extra


@pytest.fixture
def people(django_user_model):
    def make(name, **extra):
        return django_user_model.objects.create_user(name, f"{name}@corp.example", "pw", **extra)

    viewer = make("viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_task"))
    return {
        "stranger": make("stranger"),
        "sender": make("sender"),
        "viewer": viewer,
        "staff": make("staff", is_staff=True),
    }


@pytest.fixture
def notified(task, people):
    """A task notified by "sender" to two recipients: one read it, one bounced."""
    notification = notify_with_statuses(task, [st.OPENED, st.BOUNCED], sender=people["sender"])
    bounced = notification.deliveries.order_by("id").last()
    record_event(bounced, st.BOUNCED, source="esp", error="550 user1@example.com: no such user")
    return task


def get_as(client, user, url):
    if user is not None:
        client.force_login(user)
    return client.get(url)


# --- one target -------------------------------------------------------------------------


def test_anonymous_is_refused(client, notified):
    for url in (detail_url(notified), list_url(notified)):
        response = client.get(url)
        assert response.status_code == 403
        assert "private" in response["Cache-Control"]


def test_stranger_gets_404_as_for_a_missing_target(client, notified, people):
    hidden = get_as(client, people["stranger"], detail_url(notified))
    missing = client.get(detail_url(Task(pk=99999)))

    assert hidden.status_code == 404
    assert missing.status_code == 404
    assert hidden.json() == missing.json()
    assert "private" in hidden["Cache-Control"]


@pytest.mark.parametrize("who", ["sender", "staff"])
def test_sender_and_staff_see_addresses(client, notified, people, who):
    response = get_as(client, people[who], detail_url(notified))

    assert response.status_code == 200
    data = response.json()
    assert data["target"] == f"testapp.task:{notified.pk}"
    assert data["label"] == "Read by 1 of 2; Error (1 of 2)"
    recipients = [delivery["recipient"] for delivery in data["deliveries"]]
    assert recipients == ["user0@example.com", "user1@example.com"]
    assert not any(delivery["address_masked"] for delivery in data["deliveries"])
    assert "user1@example.com" in data["deliveries"][1]["events"][-1]["error"]


def test_viewer_sees_names_and_masked_addresses(client, notified, people):
    response = get_as(client, people["viewer"], detail_url(notified))

    assert response.status_code == 200
    read, bounced = response.json()["deliveries"]
    assert read["recipient"] == "u***@example.com"
    assert read["recipient_name"] == "User 0"
    assert bounced["address_masked"] is True
    assert "user1@example.com" not in response.content.decode()
    assert bounced["error"] == "550 u***@example.com: no such user"
    assert bounced["events"][-1]["error"] == "550 u***@example.com: no such user"


def test_a_recipient_sees_their_own_address_only(client, task, people):
    viewer = people["viewer"]
    notify_with_statuses(task, [st.SENT])
    Notification.objects.get().deliveries.update(user=viewer)
    notify_with_statuses(task, [st.SENT, st.SENT])
    latest = Notification.objects.order_by("-id").first()
    latest.deliveries.filter(recipient="user0@example.com").update(user=viewer)

    deliveries = get_as(client, viewer, detail_url(task)).json()["deliveries"]

    assert [d["recipient"] for d in deliveries] == ["user0@example.com", "u***@example.com"]


def test_detail_has_the_summary_fields_and_the_timeline(client, notified, people):
    data = get_as(client, people["staff"], detail_url(notified)).json()

    assert data["state"] == "read"
    assert data["total"] == 2 and data["errors"] == 1 and data["complete"] is False
    assert data["counts"]["opened"] == 1 and data["counts"]["bounced"] == 1
    assert data["notification"]["subject"] == "Task updated"
    assert data["events_truncated"] is False
    read = data["deliveries"][0]
    assert [event["kind"] for event in read["events"]] == ["sent", "delivered", "opened"]
    assert read["events"][-1]["source_label"] == "Tracking pixel"
    assert read["open_count"] == 1 and read["reports_reads"] is True


def test_uuid_target(client, people):
    target = UUIDTask.objects.create(title="uuid")
    notify_with_statuses(target, [st.DELIVERED])

    response = get_as(client, people["staff"], detail_url(target))

    assert response.status_code == 200
    assert response.json()["label"] == "Delivered"


@pytest.mark.parametrize("key", ["PROJ/123", "PROJ/", "ops:42", "a b", "ключ%20"])
def test_text_keyed_target(client, people, key):
    target = Ticket.objects.create(key=key)
    notify_with_statuses(target, [st.DELIVERED])

    response = get_as(client, people["staff"], detail_url(target))
    query = urlencode({"targets": f"testapp.ticket:{key}"})  # "%" itself encoded
    listed = get_as(
        client, people["staff"], reverse("notify_tracking:api-status-list") + "?" + query
    )

    assert response.status_code == 200
    assert response.json()["label"] == "Delivered"
    assert listed.status_code == 200
    assert [item["label"] for item in listed.json()["results"]] == ["Delivered"]


def test_a_key_with_a_nul_is_refused_not_queried(client, people):
    """No key holds a NUL, and PostgreSQL refuses one in a query (a 500 before)."""
    Ticket.objects.create(key="ab")
    client.force_login(people["staff"])

    one = client.get("/notify/api/status/testapp.ticket/a%00b/")
    badge = client.get("/notify/status/testapp.ticket/a%00b/badge/")
    many = client.get("/notify/api/status/?targets=testapp.ticket:a%00b")

    assert (one.status_code, badge.status_code, many.status_code) == (404, 404, 400)
    assert "is not a valid key of testapp.ticket" in str(many.json())


@pytest.mark.parametrize(
    "path", ["nope.task/1/", "testapp/1/", "testapp.task/not-a-number/", "testapp.uuidtask/12/"]
)
def test_bad_targets_are_404(client, people, path):
    response = get_as(client, people["staff"], "/notify/api/status/" + path)

    assert response.status_code == 404


def test_a_target_never_notified(client, task, people):
    data = get_as(client, people["staff"], detail_url(task)).json()

    assert data["state"] is None and data["total"] == 0 and data["deliveries"] == []


def test_custom_permission_setting(client, settings, task, people):
    settings.NOTIFY_TRACKING = {
        **settings.NOTIFY_TRACKING,
        "PERMISSION": "tests.test_api.only_public_titles",
    }
    public = Task.objects.create(title="public: roadmap")
    notify_with_statuses(public, [st.SENT])
    notify_with_statuses(task, [st.SENT])
    client.force_login(people["stranger"])

    assert client.get(detail_url(public)).status_code == 200
    assert client.get(detail_url(task)).status_code == 404
    results = client.get(list_url(public, task)).json()["results"]
    assert [item["target"] for item in results] == [f"testapp.task:{public.pk}"]


def only_public_titles(user, target, summary) -> bool:
    return user.is_authenticated and target.title.startswith("public:")


def test_permission_setting_is_checked(settings):
    settings.NOTIFY_TRACKING = {"PERMISSION": "tests.test_api.no_such_function"}

    errors = check_settings()

    assert any("PERMISSION" in error.msg for error in errors)


# --- many targets -----------------------------------------------------------------------


def test_list_omits_hidden_and_missing_targets(client, people):
    task = Task.objects.create(title="t")
    comment = Comment.objects.create(task=task, body="c")
    notify_with_statuses(task, [st.OPENED], sender=people["sender"])
    notify_with_statuses(comment, [st.SENT])

    as_sender = get_as(client, people["sender"], list_url(task, comment, Task(pk=9999)))
    as_staff = get_as(client, people["staff"], list_url(task, comment, Task(pk=9999)))

    assert [r["target"] for r in as_sender.json()["results"]] == [f"testapp.task:{task.pk}"]
    staff_targets = [r["target"] for r in as_staff.json()["results"]]
    assert staff_targets == [f"testapp.task:{task.pk}", f"testapp.comment:{comment.pk}"]
    assert "private" in as_staff["Cache-Control"]


@pytest.mark.parametrize(
    "query",
    ["", "?targets=", "?targets=testapp.task", "?targets=nope.x:1", "?targets=testapp.task:x"],
)
def test_list_rejects_bad_requests(client, people, query):
    response = get_as(client, people["staff"], reverse("notify_tracking:api-status-list") + query)

    assert response.status_code == 400


def test_list_is_bounded(client, settings, people):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "API_MAX_TARGETS": 3}
    tasks = [Task.objects.create(title=str(index)) for index in range(4)]
    client.force_login(people["staff"])

    assert client.get(list_url(*tasks[:3])).status_code == 200
    assert client.get(list_url(*tasks)).status_code == 400


def _list_queries(client, targets) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(list_url(*targets))
    assert response.status_code == 200
    assert len(response.json()["results"]) == len(targets)
    return len(captured)


def test_list_queries_do_not_grow_with_targets(client, people):
    client.force_login(people["viewer"])
    tasks = [Task.objects.create(title=str(index)) for index in range(50)]
    for task in tasks:
        notify_with_statuses(task, [st.OPENED, st.SENT])
    _list_queries(client, tasks[:2])

    assert _list_queries(client, tasks[:2]) == _list_queries(client, tasks)


# --- schema -----------------------------------------------------------------------------


def test_openapi_schema_describes_both_endpoints():
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    schema = SchemaGenerator().get_schema(request=None, public=True)

    validate_schema(schema)
    # drf-spectacular names a "pk" path parameter "id" (SCHEMA_COERCE_PATH_PK)
    detail = schema["paths"]["/notify/api/status/{target_type}/{id}/"]["get"]
    many = schema["paths"]["/notify/api/status/"]["get"]
    assert detail["operationId"] == "notify_tracking_status"
    assert [p["name"] for p in many["parameters"]] == ["targets"]
    status = schema["components"]["schemas"]["StatusDetail"]["properties"]
    assert {"state", "label", "deliveries", "events_truncated"} <= set(status)
    delivery = schema["components"]["schemas"]["DeliveryWithEvents"]["properties"]
    assert {"machine_open_count", "reports_reads", "events", "links", "files"} <= set(delivery)


# --- every role on every endpoint -------------------------------------------------------

ROLES = {
    # role: (sees the status, sees the addresses)
    "anonymous": (False, False),
    "stranger": (False, False),
    "viewer": (True, False),
    "sender": (True, True),
    "staff": (True, True),
}


@pytest.mark.parametrize("role", ROLES)
def test_every_role_on_every_endpoint(client, notified, people, role):
    sees, sees_addresses = ROLES[role]
    if role != "anonymous":
        client.force_login(people[role])
    fragment_url = reverse("notify_tracking:status-badge", args=["testapp.task", notified.pk])

    detail = client.get(detail_url(notified))
    many = client.get(list_url(notified))
    fragment = client.get(fragment_url)

    for response in (detail, many, fragment):
        assert "private" in response["Cache-Control"]
    if role == "anonymous":
        assert (detail.status_code, many.status_code, fragment.status_code) == (403, 403, 404)
        return
    assert detail.status_code == (200 if sees else 404)
    assert fragment.status_code == (200 if sees else 404)
    assert many.status_code == 200
    assert len(many.json()["results"]) == (1 if sees else 0)
    if sees:
        for body in (detail.content.decode(), many.content.decode(), fragment.content.decode()):
            assert ("user1@example.com" in body) is sees_addresses
            assert ("u***@example.com" in body) is not sees_addresses
