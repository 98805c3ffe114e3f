"""Settings of the worker processes the rate-limit tests start (test_ratelimit_workers.py).

The test suite's settings, plus a Redis cache shared by every worker (the rate limits
live there) and a Telegram channel pointed at the test's stand-in for the Bot API.
"""

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import NOTIFY_TRACKING

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["NOTIFY_TRACKING_TEST_CACHE_URL"],
        # Unique to the test: it deletes exactly these keys at the end.
        "KEY_PREFIX": os.environ["NOTIFY_TRACKING_TEST_CACHE_PREFIX"],
    }
}
NOTIFY_TRACKING = {
    **NOTIFY_TRACKING,
    "CHANNELS": {
        "email": {"BACKEND": "notify_tracking.channels.email.EmailChannel"},
        "telegram": {
            "BACKEND": "notify_tracking.channels.telegram.TelegramChannel",
            "OPTIONS": json.loads(os.environ["NOTIFY_TRACKING_TEST_TELEGRAM_OPTIONS"]),
        },
    },
}
