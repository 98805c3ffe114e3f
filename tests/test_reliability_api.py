"""The app's HTTP endpoints: no 5xx for any input, no data across users or targets.

- Every operation of the OpenAPI schema (drf-spectacular, as tests/test_api.py builds
  it) is fuzzed with schemathesis, with data that fits the schema and data that does
  not, as staff and as a plain user: no answer is a 5xx. The endpoints outside the
  schema (the badge fragment and PNG, the CSV export, the preferences form) are fuzzed
  with hypothesis.
- Every endpoint of the ``notify_tracking`` namespace (the tracking ones excepted:
  tests/test_reliability_tokens.py) is asked by anonymous, a stranger, the sender of
  *another* target, the target's own sender and staff: each gets what the table says,
  and never another's addresses.
- Behind Django's site-wide cache middleware, what one user was answered is never
  served to another: every answer that depends on the user says ``Cache-Control:
  private``.
"""

from __future__ import annotations

import json
from collections import Counter
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from notify_tracking import status as st
from notify_tracking.badges import png_token
from notify_tracking.models import Delivery, TrackingPreference
from tests.reliability.figures import emit
from tests.status_factories import notify_with_statuses
from tests.testapp.models import Comment, Task

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "stranger", "other_sender", "sender", "staff")
#: Tracking endpoints: anyone with the email may use them (their token is the key).
TRACKING = {"open", "click", "download"}


@pytest.fixture
def world(django_user_model):
    """Two targets, each notified by its own sender; users of every role."""

    def make(name, **extra):
        return django_user_model.objects.create_user(name, f"{name}@corp.example", **extra)

    people = {
        "stranger": make("stranger"),
        "other_sender": make("other_sender"),
        "sender": make("sender"),
        "staff": make("staff", is_staff=True),
    }
    target = Task.objects.create(title="Ours")
    other = Task.objects.create(title="Theirs")
    notify_with_statuses(target, [st.OPENED, st.BOUNCED], sender=people["sender"])
    notify_with_statuses(other, [st.SENT], sender=people["other_sender"])
    TrackingPreference.objects.create(user=people["sender"], read_notice="instant")
    return {"people": people, "target": target, "other": other}


def key(target) -> str:
    return f"{target._meta.app_label}.{target._meta.model_name}"


def urls_of(world) -> dict[str, str]:
    target = world["target"]
    delivery = Delivery.objects.filter(notification__object_id=str(target.pk)).first()
    return {
        "api-status": reverse("notify_tracking:api-status", args=[key(target), target.pk]),
        "api-status-list": reverse("notify_tracking:api-status-list")
        + f"?targets={key(target)}:{target.pk}",
        "status-badge": reverse("notify_tracking:status-badge", args=[key(target), target.pk]),
        "status-badge-png": reverse("notify_tracking:status-badge-png", args=[png_token(target)]),
        "api-activity": reverse("notify_tracking:api-activity"),
        "api-activity-events": reverse("notify_tracking:api-activity-events", args=[delivery.pk]),
        "activity-export": reverse("notify_tracking:activity-export"),
        "api-preferences": reverse("notify_tracking:api-preferences"),
        "preferences": reverse("notify_tracking:preferences"),
    }


#: endpoint -> the status each role gets (anonymous, stranger, other_sender, sender, staff).
EXPECTED = {
    "api-status": (403, 404, 404, 200, 200),
    "api-status-list": (403, 200, 200, 200, 200),
    "status-badge": (404, 404, 404, 200, 200),
    "status-badge-png": (200, 200, 200, 200, 200),  # a signed link in an email: no session
    "api-activity": (403, 403, 403, 403, 200),
    "api-activity-events": (403, 403, 403, 403, 200),
    "activity-export": (403, 403, 403, 403, 200),
    "api-preferences": (403, 200, 200, 200, 200),  # one's own
    "preferences": (302, 200, 200, 200, 200),  # one's own; anonymous to the login page
}
#: Who may read the target's full addresses in the answer.
SEES_ADDRESSES = {"sender", "staff"}


def endpoints_of_the_app() -> set[str]:
    def names(patterns, inside: bool) -> set[str]:
        found = set()
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found |= names(
                    pattern.url_patterns, inside or pattern.namespace == "notify_tracking"
                )
            elif isinstance(pattern, URLPattern) and inside and pattern.name:
                found.add(pattern.name)
        return found

    return names(get_resolver().url_patterns, False)


def test_every_endpoint_of_the_app_is_in_the_access_table():
    assert endpoints_of_the_app() - TRACKING == set(EXPECTED)


def get_as(client, world, role: str, url: str):
    client.logout()
    if role != "anonymous":
        client.force_login(world["people"][role])
    return client.get(url)


def body_of(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


@pytest.mark.parametrize("endpoint", sorted(EXPECTED))
def test_each_role_gets_what_the_table_says_and_no_one_elses_data(client, world, endpoint):
    url = urls_of(world)[endpoint]
    for role, expected in zip(ROLES, EXPECTED[endpoint], strict=True):
        response = get_as(client, world, role, url)
        assert response.status_code == expected, (role, response.status_code)
        body = body_of(response)
        if role not in SEES_ADDRESSES:  # the recipients' addresses (user0@, user1@...)
            assert "@example.com" not in body, role
        elif endpoint in ("api-status", "status-badge"):
            assert "user1@example.com" in body, role
        if response.status_code in (200, 404):
            assert "private" in response.get("Cache-Control", ""), (role, response.headers)


def test_a_list_names_only_the_targets_the_user_may_see(client, world):
    target, other = world["target"], world["other"]
    url = reverse("notify_tracking:api-status-list") + (
        f"?targets={key(target)}:{target.pk},{key(other)}:{other.pk}"
    )
    for role, expected in {
        "stranger": [],
        "other_sender": [other],
        "sender": [target],
        "staff": [target, other],
    }.items():
        results = get_as(client, world, role, url).json()["results"]
        assert [r["target"] for r in results] == [f"{key(t)}:{t.pk}" for t in expected], role


def test_the_sender_of_another_target_sees_nothing_of_ours(client, world):
    target, comment = world["target"], Comment.objects.create(task=world["target"], body="c")
    notify_with_statuses(comment, [st.SENT], sender=world["people"]["sender"])
    client.force_login(world["people"]["other_sender"])
    for url in (
        reverse("notify_tracking:api-status", args=[key(target), target.pk]),
        reverse("notify_tracking:api-status", args=[key(comment), comment.pk]),
        reverse("notify_tracking:status-badge", args=[key(comment), comment.pk]),
    ):
        assert client.get(url).status_code == 404


def test_a_badge_png_token_cannot_be_turned_into_another_targets(client, world):
    token = png_token(world["target"])
    other = png_token(world["other"])
    forged = token.rsplit(":", 2)[0] + ":" + ":".join(other.rsplit(":", 2)[1:])
    assert client.get(reverse("notify_tracking:status-badge-png", args=[forged])).status_code == 404


def test_ones_preferences_are_ones_own(client, world):
    url = reverse("notify_tracking:api-preferences")
    for role, notice in {"sender": "instant", "stranger": "never"}.items():
        assert get_as(client, world, role, url).json()["read_notice"] == notice


# --- nothing shared through a cache --------------------------------------------------------

SITE_CACHE = override_settings(
    CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    CACHE_MIDDLEWARE_SECONDS=600,
    CACHE_MIDDLEWARE_KEY_PREFIX="reliability",
    MIDDLEWARE=[
        "django.middleware.cache.UpdateCacheMiddleware",
        *django_settings.MIDDLEWARE,
        "django.middleware.cache.FetchFromCacheMiddleware",
    ],
)


@SITE_CACHE
def test_behind_a_site_cache_no_answer_is_served_to_another_user(client, world):
    caches["default"].clear()
    urls = urls_of(world)
    for role in ("staff", "anonymous", "stranger", "sender", "other_sender", "staff"):
        for name, url in urls.items():
            response = get_as(client, world, role, url)
            assert response.status_code == EXPECTED[name][ROLES.index(role)], (name, role)
            if role not in SEES_ADDRESSES:
                assert "user1@example.com" not in body_of(response), (name, role)
    # Nothing at all was kept: every answer that could be said it is private.
    assert list(caches["default"]._cache) == []


# --- no input makes a 5xx -------------------------------------------------------------------


def openapi_operations():
    import schemathesis
    from drf_spectacular.generators import SchemaGenerator

    raw = json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True)))
    schema = schemathesis.openapi.from_dict(raw)
    return [result.ok() for result in schema.get_all_operations()]


def call(client, case):
    """Send a schemathesis case through Django's test client."""
    from schemathesis.core import NOT_SET

    query = urlencode(case.query or {}, doseq=True)
    kwargs = {"QUERY_STRING": query}
    if case.body is not NOT_SET:
        body = case.body
        kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body, default=str)
        kwargs["content_type"] = case.media_type or "application/json"
    return client.generic(case.method.upper(), case.formatted_path, **kwargs)


def test_no_input_to_any_api_operation_makes_a_5xx(client, world, capsys):
    from schemathesis.generation import GenerationMode

    seen: Counter = Counter()
    operations = openapi_operations()
    assert {op.path for op in operations} >= {
        "/notify/api/status/",
        "/notify/api/status/{target_type}/{id}/",
        "/notify/api/activity/deliveries/",
        "/notify/api/activity/deliveries/{id}/events/",
        "/notify/api/preferences/",
    }
    for operation in operations:
        name = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=40,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode), role=hs.sampled_from(ROLES))
            def no_5xx(case, role):
                try:
                    (case.query and urlencode(case.query, doseq=True).encode("ascii"))
                except (UnicodeEncodeError, TypeError):
                    return  # not a request a client can send
                client.logout()
                if role != "anonymous":
                    client.force_login(world["people"][role])
                response = call(client, case)
                assert response.status_code < 500, (role, case.method, case.formatted_path)
                seen[name] += 1  # noqa: B023 (run at once, within this iteration)

            no_5xx()
    emit(
        capsys,
        "api",
        "API fuzz",
        f"{sum(seen.values())} schemathesis inputs (fitting and not fitting the schema) over "
        f"{len(seen)} operations, each as one of {len(ROLES)} roles: no 5xx",
        inputs=sum(seen.values()),
    )


any_text = hs.text(max_size=40)
path_text = any_text.filter(lambda text: text and "/" not in text)
query_params = hs.dictionaries(
    hs.sampled_from(["status", "channel", "since", "until", "recipient", "q", "page_size"])
    | any_text,
    any_text,
    max_size=4,
)
form_fields = hs.dictionaries(
    hs.sampled_from(["allow_tracking", "read_notice", "request_read_receipts"]) | any_text,
    any_text,
    max_size=4,
)


def test_no_input_to_the_other_endpoints_makes_a_5xx(client, world, capsys):
    from urllib.parse import quote

    client.force_login(world["people"]["staff"])
    export = reverse("notify_tracking:activity-export")
    form = reverse("notify_tracking:preferences")
    sent = Counter()

    @settings(max_examples=150, deadline=None, database=None)
    @given(
        target_type=path_text,
        pk=path_text,
        token=path_text,
        params=query_params,
        fields=form_fields,
    )
    def no_5xx(target_type, pk, token, params, fields):
        badge = f"/notify/status/{quote(target_type, safe='')}/{quote(pk, safe='')}/badge/"
        assert client.get(badge).status_code < 500, badge
        png = f"/notify/badge/{quote(token, safe='')}.png"
        assert client.get(png).status_code < 500, png
        response = client.get(export, QUERY_STRING=urlencode(params))
        assert response.status_code < 500, params
        body_of(response)  # the CSV streams: read it to the end
        assert client.post(form, fields).status_code < 500, fields
        sent["requests"] += 4

    no_5xx()
    emit(
        capsys,
        "api",
        "other endpoints fuzz",
        f"{sent['requests']} random requests to the badge fragment, the PNG badge, the CSV "
        "export and the preferences form: no 5xx",
        requests=sent["requests"],
    )
