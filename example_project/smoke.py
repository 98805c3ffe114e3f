"""The demo, headless: one comment posted over HTTP must reach every follower's mailbox.

``run_demo.py --smoke`` runs the same pieces as the demo (migrations, seed, the
webhook receiver, a real Celery worker, the web server) in a throwaway directory,
with SQLite and the filesystem broker whatever the environment says, so it never
touches the user's demo data. It logs in as a seeded user, posts a comment through
the real form, waits (bounded) until every delivery of that comment is ``sent``,
checks that each email is in the demo mailbox and that the webhook receiver kept the
webhook delivery's document with a valid signature, checks that the seed shows a
read, a click, a bounce and a machine open, prints one line, and exits 0; anything
else exits 1.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from http.cookiejar import CookieJar
from pathlib import Path

from . import launcher
from .webhook_inbox.receiver import read_inbox, signature_matches

AUTHOR, PASSWORD = "alice", "demo"  # a seeded watcher: the exclusion of the author shows
TASK_TITLE = "Login page rejects valid passwords"  # seeded with watchers and a contact
SEND_TIMEOUT = 60  # seconds for the worker to send every delivery
# Variables that would point the smoke run at the user's own database or services.
USER_VARIABLES = (
    "DEMO_DATABASE_URL",
    "DEMO_BROKER_URL",
    "DEMO_EMAIL_BACKEND",
    "DEMO_BASE_URL",
    "DEMO_WEBHOOK_PORT",
    "DEMO_WEBHOOK_SECRET",
)


class SmokeFailure(Exception):
    pass


def run_smoke() -> int:
    started = time.monotonic()
    var_dir = Path(tempfile.mkdtemp(prefix="demo-smoke-"))
    for name in USER_VARIABLES:
        os.environ.pop(name, None)
    port = free_port()
    children = []
    receiver = None
    try:
        receiver = launcher.bind_webhook_receiver()
        env = launcher.configure(var_dir, port, receiver.port)
        launcher.prepare(verbosity=0)
        launcher.start_webhook_receiver(receiver)
        with (
            open(var_dir / "worker.log", "wb") as worker_log,
            open(var_dir / "server.log", "wb") as server_log,
        ):
            children.append(launcher.start_worker(env, var_dir, worker_log))
            children.append(launcher.start_server(env, port, server_log))
            summary = check_comment_reaches_mailboxes(f"http://127.0.0.1:{port}", children)
        print(f"smoke OK: {summary}; {time.monotonic() - started:.1f} s", flush=True)
        return 0
    except (SmokeFailure, launcher.DemoError) as failure:
        print(f"smoke FAILED: {failure}", flush=True)
        print_logs(var_dir)
        return 1
    finally:
        launcher.stop(children)
        if receiver is not None:
            receiver.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


def check_comment_reaches_mailboxes(site: str, children) -> str:
    from django.contrib.auth import get_user_model

    from example_project.tracker.models import Comment, Task

    launcher.wait_until_up(f"{site}/accounts/login/", children)
    task = Task.objects.get(title=TASK_TITLE)
    author = get_user_model().objects.get(username=AUTHOR)
    browser = Browser(site)
    browser.log_in(AUTHOR, PASSWORD)
    body = f"Smoke test {uuid.uuid4().hex}: does everyone get this?"
    browser.post(f"/tasks/{task.pk}/comments/", {"body": body})
    comment = Comment.objects.filter(task=task, author=author, body=body).first()
    if comment is None:
        raise SmokeFailure("posting the comment form created no comment")

    deliveries = wait_until_sent(comment, children)
    emails = [delivery for delivery in deliveries if delivery.channel == "email"]
    hooks = [delivery for delivery in deliveries if delivery.channel == "webhook"]
    recipients = sorted(delivery.recipient for delivery in emails)
    expected = sorted(followers_except(task, author))
    if recipients != expected:
        raise SmokeFailure(f"emails went to {recipients}, expected {expected}")
    hook_recipients = sorted(delivery.recipient for delivery in hooks)
    expected = sorted(webhook_followers_except(task, author))
    if hook_recipients != expected:
        raise SmokeFailure(f"webhook deliveries went to {hook_recipients}, expected {expected}")
    check_mailbox(browser, emails)
    check_webhook_inbox(browser, hooks)
    check_seeded_story(browser)
    return (
        f"comment #{comment.pk} by {AUTHOR}: {len(emails)} emails sent "
        f"({', '.join(recipients)}), each in the mailbox; {len(hooks)} webhook sent "
        f"({', '.join(hook_recipients)}), received with a valid signature; "
        "seeded: a read, a click, a bounce, a machine open"
    )


def followers_except(task, author) -> set[str]:
    """Who the comment must reach by email, worked out here from the task itself."""
    users = [task.assignee, *task.watchers.all()]
    addresses = {user.email for user in users if user} | {c.email for c in task.contacts.all()}
    return addresses - {author.email}


def webhook_followers_except(task, author) -> set[str]:
    """Who the comment must reach over the webhook too: the followers in WEBHOOK_USERS."""
    from django.conf import settings

    users = {user for user in [task.assignee, *task.watchers.all()] if user} - {author}
    return {user.username for user in users} & set(settings.WEBHOOK_USERS)


def wait_until_sent(comment, children) -> list:
    from django.contrib.contenttypes.models import ContentType

    from notify_tracking.models import Delivery

    of_comment = Delivery.objects.filter(
        notification__content_type=ContentType.objects.get_for_model(comment),
        notification__object_id=str(comment.pk),
    )
    deadline = time.monotonic() + SEND_TIMEOUT
    while True:
        deliveries = list(of_comment.all())  # a fresh query each time
        if not deliveries:
            raise SmokeFailure("the comment created no notification")
        if all(delivery.status == "sent" for delivery in deliveries):
            return deliveries
        if time.monotonic() > deadline:
            states = ", ".join(f"{d.recipient}: {d.status} {d.error}".strip() for d in deliveries)
            raise SmokeFailure(f"not all sent after {SEND_TIMEOUT} s ({states})")
        launcher.check_alive(children)
        time.sleep(0.5)


def check_mailbox(browser: Browser, deliveries) -> None:
    from example_project.demo_mailbox.models import MailboxMessage

    message_ids = {delivery.email_message_id for delivery in deliveries}
    messages = list(MailboxMessage.objects.filter(message_id__in=message_ids))
    if {message.message_id for message in messages} != message_ids:
        raise SmokeFailure("the mailbox lacks some of the sent messages")
    listing = browser.get("/mailbox/")
    page = browser.get(f"/mailbox/{messages[0].pk}/")
    if html.escape(messages[0].subject) not in listing or "<iframe" not in page:
        raise SmokeFailure("the mailbox pages do not show the message")


def check_webhook_inbox(browser: Browser, deliveries) -> None:
    """The receiver kept each webhook delivery's document, signed with the channel's secret."""
    from django.conf import settings

    if not deliveries:
        raise SmokeFailure("the comment created no webhook delivery")
    entries = {
        entry["document"]["delivery"]: entry
        for entry in read_inbox(settings.WEBHOOK_INBOX)
        if entry.get("accepted")
    }
    page = browser.get("/webhook-inbox/")
    for delivery in deliveries:
        entry = entries.get(str(delivery.token))
        if entry is None:
            raise SmokeFailure(f"the webhook receiver has no document for {delivery.recipient}")
        body = entry["body"].encode()
        if not signature_matches(
            settings.WEBHOOK_SECRET, entry["timestamp"], entry["signature"], body
        ):
            raise SmokeFailure("the webhook document's signature does not match the secret")
        if delivery.message_id != entry["id"]:
            raise SmokeFailure(
                f"the delivery's id {delivery.message_id!r} is not the receiver's {entry['id']!r}"
            )
        if f'id="delivery-{delivery.token}"' not in page:
            raise SmokeFailure("the webhook inbox page does not show the document")


def check_seeded_story(browser: Browser) -> None:
    """The seed shows a read, a click, a bounce and a machine open, on the task's page too."""
    from example_project.tracker.models import Task
    from notify_tracking.models import Delivery

    seeded = {
        "a read": Delivery.objects.filter(
            status="opened", events__source="pixel", events__is_machine=False
        ),
        "a click": Delivery.objects.filter(status="clicked", events__source="click"),
        "a bounce": Delivery.objects.filter(status="bounced", events__source="dsn"),
        "a machine open": Delivery.objects.filter(machine_open_count__gte=1, open_count=0),
    }
    missing = [what for what, deliveries in seeded.items() if not deliveries.exists()]
    if missing:
        raise SmokeFailure(f"the seed shows no {', no '.join(missing)}")
    page = browser.get(f"/tasks/{Task.objects.get(title=TASK_TITLE).pk}/")
    # What each badge's popup loads when it is opened.
    for url in re.findall(r'data-nt-url="([^"]+)"', page):
        page += browser.get(html.unescape(url))
    for text in ("Read by", "Clicked", "possibly automatic open", "Mailbox full"):
        if text not in page:
            raise SmokeFailure(f"the seeded task's page does not say {text!r}")


class Browser:
    """Just enough of a browser: cookies, CSRF token, forms. Never through a proxy."""

    def __init__(self, site: str):
        if not site.startswith("http://127.0.0.1:"):
            raise ValueError(f"the smoke run only talks to its own server, not {site}")
        self.site = site
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.cookies)
        )

    def get(self, path: str) -> str:
        request = urllib.request.Request(self.site + path)  # noqa: S310  (http://127.0.0.1 only)
        return self._open(request)[1]

    def post(self, path: str, data: dict[str, str]) -> str:
        """Submit a form; return the path of the page it ended on."""
        fields = {"csrfmiddlewaretoken": self.cookie("csrftoken"), **data}
        data = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(self.site + path, data=data, method="POST")  # noqa: S310
        return self._open(request)[0]

    def log_in(self, username: str, password: str) -> None:
        self.get("/accounts/login/")  # sets the CSRF cookie
        landed = self.post("/accounts/login/", {"username": username, "password": password})
        if landed.startswith("/accounts/login/"):
            raise SmokeFailure(f"could not log in as {username}")

    def cookie(self, name: str) -> str:
        return next((cookie.value for cookie in self.cookies if cookie.name == name), "")

    def _open(self, request: urllib.request.Request) -> tuple[str, str]:
        try:
            with self.opener.open(request, timeout=20) as response:
                path = urllib.parse.urlsplit(response.geturl()).path
                return path, response.read().decode()
        except OSError as error:
            raise SmokeFailure(f"{request.get_method()} {request.full_url}: {error}") from error


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def print_logs(var_dir: Path, lines: int = 30) -> None:
    for name in ("worker.log", "server.log"):
        path = var_dir / name
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            print(f"--- last lines of {name} ---", *tail, sep="\n", file=sys.stderr)
