"""The demo mailbox: an email backend that keeps every message, and pages to read them.

It stands in for the recipients' inboxes: opening a message at ``/mailbox/<pk>/`` is
how a demo user reads a notification (and how its images, a tracking pixel among
them, get loaded by the browser).
"""
