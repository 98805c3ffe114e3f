"""ESP webhooks: anymail ``tracking`` events become delivery events, in bulk.

anymail's webhook views check each POST (basic auth, signatures), parse it into
normalized ``AnymailTrackingEvent`` objects and send one ``tracking`` signal per
event. :func:`on_tracking` receives them and does only cheap work in the request:
it maps the event (:mod:`.mapping`, with the provider's machine flags from
:mod:`.machine`) to a plain dict and buffers it (:mod:`.buffer`); the request's
events are handed to one Celery task per chunk, which matches them to deliveries and
records them (:mod:`.apply`). See docs/esp-webhooks.md.
"""

from __future__ import annotations

import logging
from typing import Any

from . import buffer
from .mapping import normalize

logger = logging.getLogger("notify_tracking.esp")


def on_tracking(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
    """anymail ``tracking`` receiver: queue the event. Never raises: a bad event is
    logged and skipped, and the other events of the POST still go through."""
    try:
        normalized = normalize(event, esp_name)
    except Exception:
        logger.warning(
            "notify_tracking: skipped a malformed %s tracking event %r",
            esp_name,
            getattr(event, "event_id", None),
            exc_info=True,
        )
        return
    if normalized is None:
        logger.debug(
            "notify_tracking: ignored a %s %r event", esp_name, getattr(event, "event_type", "")
        )
        return
    try:
        buffer.add(normalized)
    except Exception:
        logger.exception("notify_tracking: could not queue a %s tracking event", esp_name)
