"""Settings of the worker processes the reliability tests start.

The test suite's settings (tests/settings.py), plus what only these tests vary through
the environment: the fake email provider's address and timeout, and the retry limits.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import ANYMAIL, NOTIFY_TRACKING

# anymail's Postmark backend, pointed at the fake provider of test_provider_faults.py.
if os.environ.get("NOTIFY_TRACKING_TEST_POSTMARK_URL"):
    EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    ANYMAIL = {
        **ANYMAIL,
        "POSTMARK_SERVER_TOKEN": "reliability-test-token",
        "POSTMARK_API_URL": os.environ["NOTIFY_TRACKING_TEST_POSTMARK_URL"],
        "REQUESTS_TIMEOUT": float(os.environ.get("NOTIFY_TRACKING_TEST_REQUESTS_TIMEOUT", "30")),
    }

for _key in ("MAX_ATTEMPTS", "RETRY_BACKOFF_MAX"):
    if os.environ.get(f"NOTIFY_TRACKING_TEST_{_key}"):
        NOTIFY_TRACKING[_key] = int(os.environ[f"NOTIFY_TRACKING_TEST_{_key}"])
