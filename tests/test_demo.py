"""The demo (example_project/): its smoke run end to end, its mailbox, its comment view.

The smoke test runs ``example_project/run_demo.py --smoke`` as the user would: its own
settings, a real Celery worker on the filesystem broker, the real web server; another
starts the demo itself and stops it as Ctrl-C does. The other tests install the demo's
apps into the test settings for their duration.
"""

import contextlib
import datetime as dt
import hashlib
import hmac
import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.apps import apps
from django.contrib import admin
from django.core.management import call_command
from django.utils import timezone

from notify_tracking import Recipient, notify
from notify_tracking.models import Delivery, DeliveryEvent, Notification

ROOT = Path(__file__).resolve().parent.parent
DEMO_APPS = {"tracker": "example_project.tracker", "demo_mailbox": "example_project.demo_mailbox"}
MAILBOX_BACKEND = "example_project.demo_mailbox.backend.MailboxBackend"
WEBHOOK_APP = "example_project.webhook_inbox"  # no models: nothing to migrate
WEBHOOK = "notify_tracking.channels.webhook.WebhookChannel"
RECEIVER_SECRET = "the-receivers-secret"  # tests only


@pytest.mark.worker
def test_smoke_run_sends_a_posted_comment_to_every_follower_and_the_webhook():
    result = subprocess.run(
        [sys.executable, str(ROOT / "example_project" / "run_demo.py"), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(
        r"smoke OK: comment #\d+ by alice: 3 emails sent "
        r"\(bob@example\.com, carol@example\.com, dana@vendor\.example\), "
        r"each in the mailbox; 1 webhook sent \(carol\), received with a valid signature; "
        r"seeded: a read, a click, a bounce, a machine open; [\d.]+ s",
        result.stdout.strip().splitlines()[-1],
    ), result.stdout


@pytest.mark.worker
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds child processes in /proc")
def test_ctrl_c_stops_the_demo_and_its_worker_and_server(tmp_path):
    env = {**os.environ, "DEMO_VAR_DIR": str(tmp_path), "DEMO_PORT": str(free_port())}
    for name in ("DEMO_DATABASE_URL", "DEMO_BROKER_URL"):
        env.pop(name, None)
    output = tmp_path / "demo.out"
    with output.open("w") as out:
        demo = subprocess.Popen(
            [sys.executable, str(ROOT / "example_project" / "run_demo.py")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    children = []
    try:
        wait_for_text(output, "Press Ctrl-C to stop.", demo)
        children = child_pids(demo.pid)
        assert len(children) == 2, output.read_text()  # the worker and the web server
        hook = re.search(r"receiver at http://127\.0\.0\.1:(\d+)/hook/", output.read_text())
        assert hook, output.read_text()
        assert is_listening(int(hook.group(1)))  # the webhook receiver, a thread of the demo

        demo.send_signal(signal.SIGINT)

        assert demo.wait(timeout=60) == 0, output.read_text()
        assert not [pid for pid in children if is_running(pid)]
        assert not is_listening(int(hook.group(1)))
    finally:
        demo.kill()
        for pid in filter(is_running, children):  # leaders of their process groups
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def wait_for_text(path: Path, text: str, process: subprocess.Popen, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert process.poll() is None, path.read_text()
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.2)


def child_pids(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return pids


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def demo(transactional_db, settings):
    """The demo's apps, tables and URLs, for one test."""
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, *DEMO_APPS.values(), WEBHOOK_APP]
    # Installing apps keeps the relations each model cached without them (User's
    # reverse relations to tasks): expire those caches now that the registry is ready.
    apps.clear_cache()
    settings.ROOT_URLCONF = "example_project.urls"
    for label in DEMO_APPS:
        call_command("migrate", label, verbosity=0)
    yield
    for label in DEMO_APPS:
        call_command("migrate", label, "zero", verbosity=0)
        # Installing the apps registered their admins; the other tests' admin has none.
        for model in apps.get_app_config(label).get_models():
            if admin.site.is_registered(model):
                admin.site.unregister(model)


@pytest.fixture
def people(django_user_model):
    def user(username):
        return django_user_model.objects.create_user(
            username, f"{username}@example.com", "pw", first_name=username.title()
        )

    return {name: user(name) for name in ("alice", "bob", "carol", "dave")}


@pytest.fixture
def task(demo, people):
    from example_project.tracker.models import Contact, Task

    task = Task.objects.create(title="Fix the login page", assignee=people["bob"])
    task.watchers.set([people["alice"], people["carol"]])
    task.contacts.add(Contact.objects.create(name="Dana", email="dana@vendor.example"))
    return task


def test_posting_a_comment_notifies_followers_except_its_author(task, people, client):
    from example_project.tracker.models import Comment

    client.force_login(people["alice"])
    response = client.post(f"/tasks/{task.pk}/comments/", {"body": "Reproduced it."})

    comment = Comment.objects.get()
    assert response.status_code == 302
    assert response.url == f"/tasks/{task.pk}/#comment-{comment.pk}"
    assert (comment.author, comment.body) == (people["alice"], "Reproduced it.")
    notification = Notification.objects.get()
    assert (notification.target, notification.sender) == (comment, people["alice"])
    assert "Reproduced it." in notification.text
    deliveries = {d.recipient: d.user for d in notification.deliveries.all()}
    assert deliveries == {
        "bob@example.com": people["bob"],  # assignee
        "carol@example.com": people["carol"],  # watcher
        "dana@vendor.example": None,  # external contact
    }  # not alice, who wrote it; not dave, who does not follow the task

    page = client.get(response.url).content.decode()
    assert f'<article class="comment" id="comment-{comment.pk}">' in page


def test_a_comment_with_nobody_else_following_notifies_nobody(demo, people, client):
    from example_project.tracker.models import Comment, Task

    task = Task.objects.create(title="Solo", assignee=people["alice"])
    client.force_login(people["alice"])
    client.post(f"/tasks/{task.pk}/comments/", {"body": "Note to self."})

    assert Comment.objects.count() == 1
    assert not Notification.objects.exists()


def test_anonymous_users_cannot_post_comments(task, client):
    from example_project.tracker.models import Comment

    response = client.post(f"/tasks/{task.pk}/comments/", {"body": "Spam"})

    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")
    assert not Comment.objects.exists()


def test_creating_a_task_notifies_its_followers_except_its_creator(demo, people, client):
    from example_project.tracker.models import Task

    client.force_login(people["alice"])
    response = client.post(
        "/tasks/new/",
        {
            "title": "Ship it",
            "assignee": people["bob"].pk,
            "watchers": [people["alice"].pk, people["carol"].pk],
        },
    )

    task = Task.objects.get()
    assert response.status_code == 302
    assert (task.title, task.created_by) == ("Ship it", people["alice"])
    notification = Notification.objects.get()
    assert notification.target == task
    recipients = sorted(notification.deliveries.values_list("recipient", flat=True))
    assert recipients == ["bob@example.com", "carol@example.com"]


def test_assigning_a_task_notifies_the_new_assignee_only(task, people, client):
    client.force_login(people["carol"])
    client.post(f"/tasks/{task.pk}/assign/", {"assignee": people["dave"].pk})
    client.post(f"/tasks/{task.pk}/assign/", {"assignee": people["carol"].pk})  # herself

    task.refresh_from_db()
    assert task.assignee == people["carol"]
    notification = Notification.objects.get()
    assert (notification.target, notification.sender) == (task, people["carol"])
    assert list(notification.deliveries.values_list("recipient", flat=True)) == ["dave@example.com"]


def test_mailbox_backend_keeps_what_the_email_channel_sends(task, settings, client):
    from example_project.demo_mailbox.models import MailboxMessage

    settings.EMAIL_BACKEND = MAILBOX_BACKEND
    notification = notify(
        task, ["dana@vendor.example"], subject="Hello", text="Plain body", html="<p>Rich</p>"
    )

    delivery = notification.deliveries.get()
    assert delivery.status == "sent"  # the eager Celery task sent it through the backend
    message = MailboxMessage.objects.get()
    assert message.message_id == delivery.email_message_id
    assert (message.to, message.subject, message.text) == (
        "dana@vendor.example",
        "Hello",
        "Plain body",
    )
    assert "<p>Rich</p>" in message.html
    assert ["Message-ID", delivery.email_message_id] in message.headers
    assert message.from_email == settings.DEFAULT_FROM_EMAIL

    listing = client.get("/mailbox/").content.decode()
    assert f'href="/mailbox/{message.pk}/"' in listing
    page = client.get(f"/mailbox/{message.pk}/").content.decode()
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page
    assert "&lt;p&gt;Rich&lt;/p&gt;" in page  # the HTML body, escaped into srcdoc


def test_mailbox_backend_refuses_invalid_domains_with_a_reason(task, settings):
    settings.EMAIL_BACKEND = MAILBOX_BACKEND
    notification = notify(task, ["old@vendor.invalid"], subject="Hello", text="Plain body")

    delivery = Delivery.objects.get(notification=notification)
    assert delivery.status == "rejected"
    assert "550" in delivery.error
    assert "no such mailbox" in delivery.error


def test_seed_demo_is_idempotent(demo, settings):
    from example_project.tracker.models import Comment, Task

    settings.SITE_URL = "http://testserver"  # absolute links in emails: they get tracked
    call_command("seed_demo", verbosity=0)
    counts = (Task.objects.count(), Comment.objects.count(), Notification.objects.count())
    statuses = sorted(Delivery.objects.values_list("pk", "status"))
    events = DeliveryEvent.objects.count()
    call_command("seed_demo", verbosity=0)

    assert counts == (2, 3, 5)
    assert (Task.objects.count(), Comment.objects.count(), Notification.objects.count()) == counts
    assert sorted(Delivery.objects.values_list("pk", "status")) == statuses
    assert DeliveryEvent.objects.count() == events  # the reactions are not played twice
    assert apps.get_model("auth", "User").objects.get(username="admin").is_superuser


@pytest.fixture
def seeded(demo, settings):
    """The demo's seed, as `make demo` runs it (emails sent, then the reactions played)."""
    settings.SITE_URL = "http://testserver"
    call_command("seed_demo", verbosity=0)


def test_seed_shows_a_person_reading_a_notification(seeded):
    delivery = Delivery.objects.get(status="opened")

    assert (delivery.recipient, delivery.notification.target.title) == (
        "bob@example.com",
        "Login page rejects valid passwords",
    )
    assert (delivery.open_count, delivery.machine_open_count) == (1, 0)
    event = delivery.events.get(kind="opened")
    assert (event.source, event.is_machine) == ("pixel", False)
    assert "Thunderbird" in event.user_agent
    # Minutes after sending, as a person reads: not a scanner's instant fetch.
    after = event.occurred_at - delivery.sent_at
    assert dt.timedelta(minutes=12) <= after < dt.timedelta(minutes=12, seconds=5)
    assert delivery.sent_at < timezone.now() - dt.timedelta(hours=2)  # the story's past


def test_seed_shows_a_click_on_a_tracked_link(seeded):
    from example_project.tracker.models import Comment

    delivery = Delivery.objects.get(status="clicked")

    comment = Comment.objects.get(body__startswith="Reproduced in Firefox")
    assert (delivery.recipient, delivery.notification.target) == ("bob@example.com", comment)
    event = delivery.events.get(kind="clicked")
    assert (event.source, event.is_machine) == ("click", False)
    assert (
        event.details["url"] == f"http://testserver/tasks/{comment.task_id}/#comment-{comment.pk}"
    )
    assert delivery.click_count == 1


def test_seed_shows_a_bounce_with_a_readable_reason(seeded):
    delivery = Delivery.objects.get(status="bounced")

    assert delivery.recipient == "dana@vendor.example"
    assert delivery.notification.target.body.startswith("Reproduced in Firefox")
    assert delivery.error == (
        "552 5.2.2 Mailbox full: dana@vendor.example is over its quota "
        "(5.2.2 permanent failure: mailbox full); reported by mx.vendor.example"
    )
    event = delivery.events.get(kind="bounced")
    assert (event.source, event.details["matched_by"]) == ("dsn", "envelope id")


def test_seed_shows_a_machine_open_that_is_not_a_read(seeded):
    delivery = Delivery.objects.get(machine_open_count__gte=1)

    assert delivery.recipient == "carol@example.com"
    assert (delivery.status, delivery.open_count, delivery.machine_open_count) == ("sent", 0, 1)
    event = delivery.events.get(kind="opened")
    assert (event.user_agent, event.is_machine) == ("Mozilla/5.0", True)
    assert event.details["machine_reason"] == "apple_mpp"


def test_seeded_task_page_shows_each_status(seeded, client, django_user_model):
    from example_project.tracker.models import Task

    client.force_login(django_user_model.objects.get(username="alice"))
    task = Task.objects.get(title="Login page rejects valid passwords")
    page = page_and_popups(client, f"/tasks/{task.pk}/")

    assert ">Read by 1 of 3<" in page  # the task: Bob read it
    assert ">Clicked<" in page  # Alice's comment: Bob clicked its link...
    assert ">Read by 1 of 3; Error (1 of 3)<" in page  # ...and Dana's mailbox is full
    assert "Why it failed: 552 5.2.2 Mailbox full" in page
    assert "1 possibly automatic open (a mail client or a security scanner" in page  # Bob's


def page_and_popups(client, path: str) -> str:
    """The page, and the details each of its list badges loads when its popup opens."""
    page = client.get(path).content.decode()
    urls = re.findall(r'data-nt-url="([^"]+)"', page)
    assert urls, f"{path} has no badge that loads its details"
    return page + "".join(client.get(html.unescape(url)).content.decode() for url in urls)


# --- the webhook channel and its receiver ----------------------------------------------


@pytest.fixture
def receiver(tmp_path):
    from example_project.webhook_inbox.receiver import WebhookReceiver

    with WebhookReceiver() as receiver:
        yield receiver.start(RECEIVER_SECRET, tmp_path / "inbox.jsonl")


def webhook_settings(settings, url: str, secret: str) -> None:
    settings.NOTIFY_TRACKING = {
        **settings.NOTIFY_TRACKING,
        "CHANNELS": {
            "email": {"BACKEND": "notify_tracking.channels.email.EmailChannel"},
            "webhook": {"BACKEND": WEBHOOK, "OPTIONS": {"URL": url, "SECRET": secret}},
        },
    }
    settings.WEBHOOK_USERS = ["carol"]
    settings.WEBHOOK_INBOX = ""


def test_a_comment_reaches_carol_over_the_webhook_too(task, people, client, settings, receiver):
    from example_project.webhook_inbox.receiver import read_inbox, signature_matches

    webhook_settings(settings, receiver.url, RECEIVER_SECRET)
    settings.WEBHOOK_INBOX = receiver.inbox
    client.force_login(people["alice"])
    client.post(f"/tasks/{task.pk}/comments/", {"body": "Over the hook."})

    hook = Delivery.objects.get(channel="webhook")
    assert (hook.recipient, hook.user, hook.recipient_name) == ("carol", people["carol"], "Carol")
    assert hook.status == "sent"
    [entry] = read_inbox(receiver.inbox)
    assert entry["accepted"] and entry["id"] == hook.message_id
    assert signature_matches(RECEIVER_SECRET, entry["timestamp"], entry["signature"],
                             entry["body"].encode())  # fmt: skip
    document = entry["document"]
    assert (document["delivery"], document["recipient"]) == (str(hook.token), "carol")
    assert document["target"]["model"] == "comment"
    assert "Over the hook." in document["text"]
    emails = Delivery.objects.filter(channel="email").values_list("recipient", flat=True)
    assert sorted(emails) == ["bob@example.com", "carol@example.com", "dana@vendor.example"]

    inbox = client.get("/webhook-inbox/").content.decode()
    assert f'id="delivery-{hook.token}"' in inbox
    page = page_and_popups(client, f"/tasks/{task.pk}/")
    assert "via Webhook" in page
    assert "Webhook does not report deliveries or reads" in page


def test_the_receiver_refuses_a_bad_signature_and_the_delivery_fails(task, settings, receiver):
    from example_project.webhook_inbox.receiver import read_inbox

    webhook_settings(settings, receiver.url, "not-the-receivers-secret")
    notification = notify(
        task, [Recipient("carol", channel="webhook")], subject="Hello", text="Plain body"
    )

    delivery = notification.deliveries.get()
    assert delivery.status == "failed"  # a 4xx other than 408, 425, 429 is not retried
    assert delivery.attempts == 1
    assert delivery.error.startswith("the receiver answered HTTP 401")
    assert "bad or expired signature" in delivery.error
    [entry] = read_inbox(receiver.inbox)
    assert (entry["accepted"], entry["status"]) == (False, 401)
    assert entry["delivery"] == str(delivery.token)
    assert "body" not in entry  # an unverified document is not kept


def test_the_receiver_checks_the_signature_as_documented(receiver):
    body = json.dumps({"delivery": "d-1", "text": "hi"}).encode()

    def post(timestamp: int, secret: str = RECEIVER_SECRET, payload: bytes = body):
        signed = str(timestamp).encode() + b"." + payload
        signature = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        headers = {"X-Notify-Timestamp": str(timestamp), "X-Notify-Signature": signature}
        return requests.post(receiver.url, data=payload, headers=headers, timeout=5)

    now = int(time.time())
    first = post(now)
    assert first.status_code == 200
    assert post(now + 1).json() == first.json()  # a retry of the same delivery: same id
    assert post(now - 301).status_code == 401  # too old: a replay
    assert post(now, secret="guess").status_code == 401
    assert requests.post(receiver.url, data=body, timeout=5).status_code == 401  # unsigned
    tampered = body.replace(b"hi", b"yo")
    signed = post(now).request.headers["X-Notify-Signature"]
    headers = {"X-Notify-Timestamp": str(now), "X-Notify-Signature": signed}
    assert requests.post(receiver.url, data=tampered, headers=headers, timeout=5).status_code == 401
