"""PNG badges: signed URLs, valid images, rendered once per state and label."""

from __future__ import annotations

import io

import pytest
from django.template import Context, Template
from PIL import Image

from notify_tracking import record_event
from notify_tracking import status as st
from notify_tracking.badges import HEIGHT, STATE_COLOURS, render_png, signed_png_url
from tests.status_factories import notify_with_statuses
from tests.testapp.models import Task

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache():
    render_png.cache_clear()
    yield
    render_png.cache_clear()


def fetch_png(client, target) -> Image.Image:
    url = signed_png_url(target)
    assert url.startswith("http://testserver/notify/badge/")
    response = client.get(url.removeprefix("http://testserver"))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "private" in response["Cache-Control"]
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


@pytest.mark.parametrize(
    ("statuses", "state"),
    [([st.QUEUED], "queued"), ([st.SENT], "sent"), ([st.DELIVERED], "delivered"),
     ([st.OPENED, st.SENT], "read"), ([st.FAILED], "error")],
)  # fmt: skip
def test_png_badge_without_a_session(client, task, statuses, state):
    notify_with_statuses(task, statuses)

    image = fetch_png(client, task)  # an email client: no login

    assert image.format == "PNG"
    assert image.height == HEIGHT
    assert 40 < image.width < 300
    assert image.convert("RGB").getpixel((1, 1)) == STATE_COLOURS[state]


def test_a_target_never_notified_has_a_grey_badge(client, task):
    image = fetch_png(client, task)

    assert image.convert("RGB").getpixel((1, 1)) == STATE_COLOURS[None]


def test_rendered_once_per_state_and_label(client):
    tasks = [Task.objects.create(title=str(index)) for index in range(3)]
    for task in tasks:
        notify_with_statuses(task, [st.OPENED, st.SENT])

    first = fetch_png(client, tasks[0])
    for task in [*tasks, *tasks]:
        fetch_png(client, task)

    info = render_png.cache_info()
    assert (info.misses, info.hits) == (1, 6)
    assert fetch_png(client, tasks[2]).tobytes() == first.tobytes()


def test_a_new_state_renders_a_new_image(client, task):
    notification = notify_with_statuses(task, [st.SENT])
    sent = fetch_png(client, task)

    record_event(notification.deliveries.get(), st.DELIVERED, source="esp")
    delivered = fetch_png(client, task)

    assert render_png.cache_info().misses == 2
    assert sent.tobytes() != delivered.tobytes()


def test_tampered_or_stale_tokens_are_404(client, task):
    url = signed_png_url(task).removeprefix("http://testserver")

    assert client.get(url.replace("badge/", "badge/x")).status_code == 404
    assert client.get("/notify/badge/not-a-token.png").status_code == 404
    task.delete()
    assert client.get(url).status_code == 404


def test_template_tag_gives_the_absolute_url(task):
    html = Template("{% load notify_tracking %}{% delivery_badge_png_url task %}").render(
        Context({"task": task})
    )

    assert html.startswith("http://testserver/notify/badge/") and html.endswith(".png")


def test_without_base_url_the_request_makes_it_absolute(task, settings, rf):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "BASE_URL": None}

    url = signed_png_url(task, request=rf.get("/", HTTP_HOST="tracker.example.com"))

    assert url.startswith("http://tracker.example.com/notify/badge/")
