"""Who hears about what, and what they are sent: the demo's calls to ``notify()``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

from notify_tracking import Recipient, notify
from notify_tracking.models import Notification

from .models import Comment, Task

WEBHOOK_CHANNEL = "webhook"


def followers(task: Task, *, except_user: Any = None) -> list[Any]:
    """The task's assignee, watchers (users) and external contacts (addresses).

    Without ``except_user`` (the one who acted: nobody is told about their own
    comment), and without users who have no email address.
    """
    users = [task.assignee, *task.watchers.order_by("username")]
    excluded_email = (getattr(except_user, "email", "") or "").lower()
    recipients: dict[str, Any] = {}
    for user in users:
        if user is not None and user != except_user and user.email:
            recipients.setdefault(user.email.lower(), user)
    for contact in task.contacts.all():
        if contact.email.lower() != excluded_email:
            recipients.setdefault(contact.email.lower(), contact.email)
    return list(recipients.values())


def webhook_recipients(recipients: list[Any]) -> list[Recipient]:
    """Those of ``recipients`` who also get this over the webhook channel.

    The users named in ``settings.WEBHOOK_USERS`` (the demo: Carol, whose team chat
    is on the other end of the webhook), when a ``webhook`` channel is configured.
    On that channel a user is named by their user name, which the receiver knows.
    """
    channels = getattr(settings, "NOTIFY_TRACKING", {}).get("CHANNELS", {})
    names = set(getattr(settings, "WEBHOOK_USERS", ()))
    if WEBHOOK_CHANNEL not in channels or not names:
        return []
    return [
        Recipient(user.get_username(), channel=WEBHOOK_CHANNEL, user=user, name=display_name(user))
        for user in recipients
        if isinstance(user, AbstractBaseUser) and user.get_username() in names
    ]


def notify_comment(comment: Comment) -> Notification | None:
    """Tell the task's followers about a new comment, except its author.

    By email; and over the webhook too for the users of ``settings.WEBHOOK_USERS``.
    """
    task = comment.task
    recipients = followers(task, except_user=comment.author)
    recipients += webhook_recipients(recipients)
    if not recipients:
        return None
    subject = _("[%(task)s] New comment by %(author)s") % {
        "task": one_line(task.title),
        "author": display_name(comment.author),
    }
    context = {"comment": comment, "task": task, "url": absolute_url(comment.get_absolute_url())}
    return _send(comment, recipients, subject, "comment", context, sender=comment.author)


def notify_task_created(task: Task) -> Notification | None:
    """Tell the new task's followers about it, except the one who created it."""
    recipients = followers(task, except_user=task.created_by)
    if not recipients:
        return None
    subject = _("[%(task)s] New task by %(author)s") % {
        "task": one_line(task.title),
        "author": display_name(task.created_by),
    }
    context = {"task": task, "url": absolute_url(task.get_absolute_url())}
    return _send(task, recipients, subject, "task_created", context, sender=task.created_by)


def notify_assigned(task: Task, by: Any) -> Notification | None:
    """Tell the new assignee, unless they assigned the task to themselves."""
    assignee = task.assignee
    if assignee is None or assignee == by or not assignee.email:
        return None
    subject = _("[%(task)s] Assigned to you by %(author)s") % {
        "task": one_line(task.title),
        "author": display_name(by),
    }
    context = {"task": task, "by": by, "url": absolute_url(task.get_absolute_url())}
    return _send(task, [assignee], subject, "assigned", context, sender=by)


def _send(target, recipients, subject, template, context, *, sender) -> Notification:
    return notify(
        target,
        recipients,
        subject=subject,
        text=render_to_string(f"tracker/email/{template}.txt", context),
        html=render_to_string(f"tracker/email/{template}.html", context),
        sender=sender if isinstance(sender, AbstractBaseUser) else None,
    )


def display_name(user: Any) -> str:
    if user is None:
        return _("someone")
    return user.get_full_name() or user.get_username()


def one_line(text: str) -> str:
    return " ".join(text.split())


def absolute_url(path: str) -> str:
    """The site's absolute URL of ``path``: emails are read outside the site."""
    return f"{getattr(settings, 'SITE_URL', '')}{path}"
