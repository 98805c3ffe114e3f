"""The ceiling of the send benchmark: a task that does nothing but be counted."""

from functools import lru_cache

import redis
from celery import shared_task
from django.conf import settings

COUNTER_KEY = "nt_bench:noop_done"


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


# The same options as notify_tracking.send_deliveries: late ack, no result.
@shared_task(name="bench.noop", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def noop(delivery_id: int) -> None:
    """Nothing; one counter increment so the bench knows when the last one ran."""
    _redis().incr(COUNTER_KEY)
