"""An email provider that fails, times out or is slow: retries with backoff, then a final
status with the reason.

A worker sends through anymail's real Postmark backend, pointed (``POSTMARK_API_URL``)
at a fake Postmark on 127.0.0.1 that answers each recipient by a rule. With
``RETRY_BACKOFF=1``, ``MAX_ATTEMPTS=4`` and anymail's ``REQUESTS_TIMEOUT=1.5``:

| recipient | the provider | expected |
| --- | --- | --- |
| ok@ | accepts at once | sent, 1 attempt |
| slow@ | accepts after 1 s (under the timeout) | sent, 1 attempt |
| flaky@ | 500 twice, then accepts | sent after 3 attempts, 2 ``deferred`` with the reason |
| down@ | 500 every time | ``failed`` after 4 attempts, with the provider's words |
| late@ | too slow once (3 s), then accepts | ``deferred`` (timed out), then sent |
| hung@ | too slow every time | ``failed`` after 4 attempts |
| throttled@ | 429 once, then accepts | ``deferred``, then sent |
| inactive@ | 422 "inactive recipient" (ErrorCode 406) | ``rejected`` at once, never retried |

Between attempts the worker waits at least half the doubled backoff: 0.5, 1, 2 s.
"""

from __future__ import annotations

import itertools

import pytest

from notify_tracking import notify
from notify_tracking import status as st
from notify_tracking.models import Delivery
from tests.integration.conftest import wait_until
from tests.reliability.conftest import nothing_left_to_send
from tests.reliability.fake_provider import accepted
from tests.testapp.models import Task

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

TIMEOUT = 1.5
SETTINGS = {"RETRY_BACKOFF": 1, "MAX_ATTEMPTS": 4, "REQUESTS_TIMEOUT": TIMEOUT}
SERVER_ERROR = {"ErrorCode": 500, "Message": "Internal server error, please retry"}
INACTIVE = {
    "ErrorCode": 406,
    "Message": "You tried to send to a recipient that has been marked as inactive.\n"
    " Found inactive addresses: inactive@example.com.\n Inactive recipients are ones that"
    " have generated a hard bounce or a spam complaint. ",
}


def rules() -> dict:
    return {
        "ok@example.com": lambda to: lambda attempt: (0.0, 200, accepted(to)),
        "slow@example.com": lambda to: lambda attempt: (1.0, 200, accepted(to)),
        "flaky@example.com": lambda to: (
            lambda attempt: (0.0, 500, SERVER_ERROR) if attempt < 2 else (0.0, 200, accepted(to))
        ),
        "down@example.com": lambda to: lambda attempt: (0.0, 500, SERVER_ERROR),
        "late@example.com": lambda to: (
            lambda attempt: (3.0, 200, accepted(to)) if attempt < 1 else (0.0, 200, accepted(to))
        ),
        "hung@example.com": lambda to: lambda attempt: (3.0, 200, accepted(to)),
        "throttled@example.com": lambda to: (
            lambda attempt: (
                (0.0, 429, {"ErrorCode": 429, "Message": "Rate limit exceeded"})
                if attempt < 1
                else (0.0, 200, accepted(to))
            )
        ),
        "inactive@example.com": lambda to: lambda attempt: (0.0, 422, INACTIVE),
    }


def waits(times: list[float]) -> list[float]:
    return [round(later - earlier, 2) for earlier, later in itertools.pairwise(times)]


def test_provider_failures_timeouts_and_slowness(workers, fake_postmark, figures):
    for address, rule in rules().items():
        fake_postmark.rules[address] = rule(address)
    workers(postmark_url=fake_postmark.url, **SETTINGS)
    for address in fake_postmark.rules:
        notify(Task.objects.create(title=address), [address], subject="Hi", text="Hello.")
    wait_until(nothing_left_to_send, timeout=180, what="every delivery to settle")
    by_address = {d.recipient: d for d in Delivery.objects.all()}
    attempts = fake_postmark.attempts

    def kinds(address: str) -> list[str]:
        return [event.kind for event in by_address[address].events.all()]

    lines = [
        f"{address.split('@')[0]}: {by_address[address].status} after "
        f"{len(attempts.get(address, []))} request(s), waits {waits(attempts.get(address, []))}"
        for address in fake_postmark.rules
    ]
    figures("provider faults", "; ".join(lines), errors={a: d.error for a, d in by_address.items()})

    for address in ("ok@example.com", "slow@example.com"):
        assert (by_address[address].status, len(attempts[address])) == (st.SENT, 1)
        assert kinds(address) == [st.SENT]
    assert by_address["ok@example.com"].message_id  # the provider's id is kept

    flaky = by_address["flaky@example.com"]
    assert (flaky.status, flaky.attempts, flaky.error) == (st.SENT, 3, "")
    assert kinds("flaky@example.com") == [st.DEFERRED, st.DEFERRED, st.SENT]
    for event in flaky.events.filter(kind=st.DEFERRED):
        assert "HTTP 500" in event.details["error"]
        assert "Internal server error, please retry" in event.details["error"]

    down = by_address["down@example.com"]
    assert (down.status, down.attempts) == (st.FAILED, 4)
    assert kinds("down@example.com") == [st.DEFERRED] * 3 + [st.FAILED]
    assert "Internal server error, please retry" in down.error
    assert "HTTP 500" in down.error
    assert down.error.endswith("(gave up after 4 attempts)")
    # Exponential backoff with jitter: each wait at least half of 1, 2, 4 seconds.
    for attempt, wait in enumerate(waits(attempts["down@example.com"]), 1):
        assert 2 ** (attempt - 1) / 2 <= wait <= 2 ** (attempt - 1) + 5

    late = by_address["late@example.com"]
    assert (late.status, late.attempts) == (st.SENT, 2)
    assert kinds("late@example.com") == [st.DEFERRED, st.SENT]
    hung = by_address["hung@example.com"]
    assert (hung.status, hung.attempts, len(attempts["hung@example.com"])) == (st.FAILED, 4, 4)
    assert hung.error.endswith("(gave up after 4 attempts)")
    for waited in waits(attempts["hung@example.com"]):
        assert waited >= TIMEOUT  # each attempt waited for the timeout first

    throttled = by_address["throttled@example.com"]
    assert (throttled.status, throttled.attempts) == (st.SENT, 2)
    assert "HTTP 429" in throttled.events.get(kind=st.DEFERRED).details["error"]

    inactive = by_address["inactive@example.com"]
    assert (inactive.status, inactive.attempts) == (st.REJECTED, 1)
    assert len(attempts["inactive@example.com"]) == 1  # a permanent refusal is not retried
    assert "inactive" in inactive.error
