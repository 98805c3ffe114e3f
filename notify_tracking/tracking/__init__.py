"""Open, click and download tracking: tokens, message rewriting, views, classification.

See docs/tracking.md. :func:`opens_trackable` tells whether a delivery's opens can be
seen at all (an email with an HTML part, tracking allowed, ``BASE_URL`` set).
"""

from .policy import clicks_trackable, opens_trackable

__all__ = ["clicks_trackable", "opens_trackable"]
