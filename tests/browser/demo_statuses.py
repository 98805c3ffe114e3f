"""Give the seeded demo's deliveries a realistic mix of statuses, through record_event().

Run in the demo's own settings (a subprocess of the browser tests)::

    DJANGO_SETTINGS_MODULE=example_project.settings python -m tests.browser.demo_statuses

Without a Celery worker the seeded deliveries stay ``queued``; this records what the
worker, the email provider and the readers would have reported, recipient by recipient.
"""

from __future__ import annotations

import django

#: recipient address -> the events that happened to its messages, in order.
STORIES: dict[str, list[tuple[str, str, dict]]] = {
    "alice@example.com": [
        ("sent", "channel", {}),
        ("delivered", "esp", {}),
        ("opened", "pixel", {"is_machine": True}),
        ("opened", "pixel", {}),
    ],
    "bob@example.com": [
        ("sent", "channel", {}),
        ("delivered", "esp", {}),
        ("clicked", "click", {"details": {"url": "http://127.0.0.1/tasks/1/"}}),
    ],
    "carol@example.com": [("sent", "channel", {}), ("delivered", "esp", {})],
    "dana@vendor.example": [
        ("sent", "channel", {}),
        ("bounced", "esp", {"error": "550 5.1.1 dana@vendor.example: mailbox unavailable"}),
    ],
}


def main() -> None:
    django.setup()
    from notify_tracking import record_event
    from notify_tracking.models import Delivery

    for delivery in Delivery.objects.filter(status="queued").order_by("id"):
        for kind, source, extra in STORIES.get(delivery.recipient.lower(), []):
            record_event(delivery, kind, source=source, **extra)


if __name__ == "__main__":
    main()
