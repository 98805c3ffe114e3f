"""Any order, any resend, through every entry point: the in-order state, each event once.

One delivery's story is a random list of events, one minute apart, each arriving
through the entry point a real one would use:

- ``esp``: anymail's ``tracking`` signal, as its webhook views send it (then the
  buffer, the ``apply_esp_events`` task and the matcher);
- ``pixel``: a GET of the open pixel (a person's browser, or Apple's proxy);
- ``click``: a GET of a tracked link (one of two);
- ``dsn``: a delivery status notification through ``reports.ingest_bytes``;
- ``mdn``: a read receipt through ``reports.ingest_bytes``.

The same events then arrive shuffled, with the provider-keyed ones (ESP events,
reports) resent a random number of times: a pixel load or a click has no provider id,
each one is a new open or click, so those are not resent. The delivery must end with the
summary the events reach once and in time order, and each provider event stored once.
The pixel and link views take the time of the request: it is set to the event's.
"""

from __future__ import annotations

import datetime as dt
import types
from collections import Counter
from unittest import mock

import pytest
from anymail.signals import tracking
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from notify_tracking.models import Delivery, DeliveryEvent
from notify_tracking.reports import ingest_bytes
from notify_tracking.tracking import tokens
from tests.reliability.events import (
    APPLE_PROXY,
    BROWSER,
    DSN_ACTIONS,
    ESP_TYPES,
    LINKS,
    MDN_DISPOSITIONS,
    dsn,
    esp_event,
    mdn,
    sent_delivery,
)
from tests.reliability.figures import emit

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

SUMMARY = (
    "status", "error", "sent_at", "delivered_at", "first_opened_at", "last_opened_at",
    "first_clicked_at", "failed_at", "open_count", "machine_open_count", "click_count",
    "machine_click_count",
)  # fmt: skip
#: Entry points whose events carry a provider id: those a provider may resend.
KEYED = ("esp", "dsn", "mdn")

event_specs = hs.one_of(
    hs.tuples(hs.just("esp"), hs.sampled_from(ESP_TYPES)),
    hs.tuples(hs.just("pixel"), hs.sampled_from((BROWSER, APPLE_PROXY))),
    hs.tuples(hs.just("click"), hs.sampled_from(LINKS)),
    hs.tuples(hs.just("dsn"), hs.sampled_from(sorted(DSN_ACTIONS))),
    hs.tuples(hs.just("mdn"), hs.sampled_from(MDN_DISPOSITIONS)),
)


class Story:
    """Applies one event of a delivery's story through its entry point."""

    def __init__(self, client, capture):
        self.client = client
        self.capture = capture

    def arrive(self, delivery: Delivery, spec: tuple[str, str], at: dt.datetime, n: int) -> None:
        entry, what = spec
        if entry == "esp":
            with self.capture(execute=True):
                tracking.send(
                    sender=object, event=esp_event(delivery, what, at, n), esp_name="Postmark"
                )
        elif entry == "dsn":
            assert ingest_bytes(dsn(delivery, what, at, n)).ignored == []
        elif entry == "mdn":
            assert ingest_bytes(mdn(delivery, what, at, n)).ignored == []
        else:
            if entry == "pixel":
                url = reverse("notify_tracking:open", args=[tokens.sign_open(delivery.token)])
            else:
                url = reverse(
                    "notify_tracking:click", args=[tokens.sign_click(delivery.token, what)]
                )
            user_agent = what if entry == "pixel" else BROWSER
            at_that_time = types.SimpleNamespace(now=lambda: at)
            with mock.patch("notify_tracking.tracking.views.timezone", at_that_time):
                response = self.client.get(url, HTTP_USER_AGENT=user_agent)
            assert response.status_code in (200, 302)


def summary(delivery: Delivery) -> dict:
    stored = Delivery.objects.get(pk=delivery.pk)
    return {name: getattr(stored, name) for name in SUMMARY}


def test_any_order_and_resends_through_every_entry_point_end_in_the_in_order_state(
    task, client, django_capture_on_commit_callbacks, capsys
):
    story = Story(client, django_capture_on_commit_callbacks)
    seen = Counter()
    base = timezone.now().replace(microsecond=0) - dt.timedelta(days=3)

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(specs=hs.lists(event_specs, min_size=1, max_size=10), data=hs.data())
    def check(specs, data):
        sent_at = base
        events = [(spec, sent_at + dt.timedelta(minutes=n + 1), n) for n, spec in enumerate(specs)]
        keyed = [event for event in events if event[0][0] in KEYED]
        resent = data.draw(hs.lists(hs.sampled_from(keyed), max_size=6) if keyed else hs.just([]))
        arrivals = data.draw(hs.permutations(events + resent), label="arrivals")

        in_order = sent_delivery(task, sent_at)
        for spec, at, n in events:
            story.arrive(in_order, spec, at, n)
        shuffled = sent_delivery(task, sent_at)
        for spec, at, n in arrivals:
            story.arrive(shuffled, spec, at, n)

        assert summary(shuffled) == summary(in_order)
        stored = Counter(
            DeliveryEvent.objects.filter(delivery=shuffled).values_list("source", flat=True)
        )
        expected = Counter({"channel": 1})
        expected.update(entry for (entry, _), _, _ in events)
        assert stored == expected  # every event stored, each provider event once
        seen["stories"] += 1
        seen["events"] += len(events)
        seen["arrivals"] += len(arrivals)
        seen["resent"] += len(resent)

    check()
    emit(
        capsys,
        "event order",
        "event order",
        f"{seen['stories']} random stories, {seen['events']} events through 5 entry points, "
        f"{seen['arrivals']} shuffled arrivals ({seen['resent']} resent): every one ended in "
        "the in-order state, each provider event stored once",
        **seen,
    )


def test_a_click_is_not_made_a_burst_by_a_click_stamped_later(task, client):
    """Found by the test above: the burst rule looked at clicks after this one too."""
    sent_at = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
    delivery = sent_delivery(task, sent_at)
    story = Story(client, capture=None)
    story.arrive(delivery, ("click", LINKS[1]), sent_at + dt.timedelta(minutes=2), 1)
    story.arrive(delivery, ("click", LINKS[0]), sent_at + dt.timedelta(minutes=1), 0)

    clicks = delivery.events.filter(kind="clicked")
    assert [event.is_machine for event in clicks] == [False, False]
    stored = Delivery.objects.get(pk=delivery.pk)
    assert (stored.click_count, stored.machine_click_count) == (2, 0)


def test_two_links_in_the_same_second_are_still_a_burst(task, client):
    sent_at = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
    delivery = sent_delivery(task, sent_at)
    story = Story(client, capture=None)
    first = sent_at + dt.timedelta(minutes=1)
    story.arrive(delivery, ("click", LINKS[0]), first, 0)
    story.arrive(delivery, ("click", LINKS[1]), first + dt.timedelta(milliseconds=400), 1)

    machine = list(delivery.events.filter(kind="clicked").values_list("is_machine", flat=True))
    assert machine == [True, True]  # the second completes the burst and revises the first
    delivery.refresh_from_db()
    assert (delivery.click_count, delivery.machine_click_count) == (0, 2)
