"""The webhook inbox page: what the demo's webhook receiver got, newest first.

Open to anyone who reaches the demo, like the mailbox: it stands in for the system
on the other end of the webhook (a team chat, say), not for a page of the tracker.
"""

from datetime import datetime

from django.conf import settings
from django.shortcuts import render

from .receiver import read_inbox

SHOWN = 200


def inbox(request):
    entries = list(read_inbox(getattr(settings, "WEBHOOK_INBOX", None)))[::-1][:SHOWN]
    for entry in entries:
        try:
            entry["received"] = datetime.fromisoformat(entry.get("received_at", ""))
        except (TypeError, ValueError):
            entry["received"] = None
    context = {"entries": entries, "url": getattr(settings, "WEBHOOK_URL", "")}
    return render(request, "webhook_inbox/inbox.html", context)
