"""Activity log and retention at scale: search latency on 1,000,000 deliveries, and
sending while the purge removes 500,000 of them.

1. **Load** (SQL ``generate_series``, not the ORM): 200,000 notifications over 90 days,
   5 deliveries each (1,000,000) and 1 to 5 events each (3,000,000). 120,000
   recipients, skewed (a few get thousands of deliveries, most a handful), 12
   domains, a third stored in mixed or upper case, 5 % chat ids; statuses from
   ``sent`` to ``complained``. Half the notifications are 46 to 90 days old, past the
   45 days of ``RETENTION_DAYS``: 500,000 deliveries and their events are expired.
2. **Search**: ``SEARCHES`` addresses drawn from the deliveries, typed in a random
   case, searched whole (``recipient=``) and by a prefix of 3 characters up to the
   whole local part (``recipient_prefix=``) through the activity log API (DRF's test
   client, as a staff user: permission, filter parsing, the cursor page of 50,
   serialization). p50/p95/p99 of the API, and of the bare page query. EXPLAIN
   (ANALYZE, BUFFERS) of each kind of query, with the indexes it reads.
3. **Purge while sending**: ``notify()`` → ``sent`` through a real Celery worker, the
   backlog kept full; deliveries sent per second in a window before the purge,
   during ``manage.py notify_tracking_purge`` (a process of its own), and after it.
   The ratio is during / mean(before, after); also the longest pause between two
   sends in each window, and the purge's duration and what it removed.
"""

# The SQL below is built from this module's own constants and table names, never input.
# ruff: noqa: S608

from __future__ import annotations

import datetime as dt
import itertools
import os
import random
import re
import statistics
import subprocess
import time
from typing import Any

from . import services
from .common import announce, bench_target, bench_user, email, ratio

# BENCH_ACTIVITY_NOTIFICATIONS: a smaller load, to try the benchmark out (the figures of
# docs/performance.md are of the default).
NOTIFICATIONS = int(os.environ.get("BENCH_ACTIVITY_NOTIFICATIONS", 200_000))
PER_NOTIFICATION = 5
RECIPIENTS = NOTIFICATIONS * 3 // 5
RETENTION_DAYS = 45  # the setting's default; the bench does not change it
SEARCHES = 300
PAGE = 50
WINDOW = float(
    os.environ.get("BENCH_ACTIVITY_WINDOW", 40)
)  # seconds of sending measured before and after the purge
BACKLOG = 400  # queued deliveries the producer keeps ahead of the worker
SEED = 20240503

FIRST = (  # noqa: SIM905 (a list of words reads better)
    "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy "
    "rupert sybil trent victor walter xavier yvonne zoe anna boris chen dmitri elena "
    "fatima goran hana igor jana kenji lena maria nikolai oksana pavel qiang rosa "
    "sergei tanya ulla vera wei xenia yuri zara ahmed beatriz carlos darya emil "
    "farid gulnara hugo ines jorge"
).split()
LAST = (  # noqa: SIM905 (a list of words reads better)
    "smith jones brown taylor wilson davies evans thomas johnson roberts walker wright "
    "robinson thompson white hughes edwards green hall wood harris lewis martin jackson "
    "clarke clark turner hill scott cooper morris ward moore king watson baker harrison "
    "morgan patel young allen mitchell james anderson phillips lee bell parker davis "
    "ivanov petrov sidorov smirnov kuznetsov popov vasiliev sokolov mikhailov novikov "
    "fedorov morozov volkov alekseev lebedev semenov egorov pavlov kozlov stepanov "
    "nikolaev orlov andreev makarov nikitin zakharov"
).split()
DOMAINS = (  # noqa: SIM905 (a list of words reads better)
    "gmail.com gmail.com gmail.com yandex.ru mail.ru outlook.com example.com "
    "acme-corp.com tracker.example.org hotmail.com proton.me uni-heidelberg.de"
).split()
#: Status of a delivery by cumulative share (no queued/deferred: the worker would send them).
STATUS_SHARES = (
    ("sent", 0.25), ("delivered", 0.55), ("opened", 0.77), ("clicked", 0.85),
    ("bounced", 0.91), ("failed", 0.95), ("rejected", 0.97), ("complained", 1.0),
)  # fmt: skip
#: The n-th event of a delivery: (kind, source); a delivery has 1 + (its rank % 5).
EVENT_STEPS = (
    ("sent", "channel"), ("delivered", "esp"), ("opened", "pixel"), ("opened", "pixel"),
    ("clicked", "click"),
)  # fmt: skip
PLAN_NODE = re.compile(
    r"((?:Parallel )?(?:Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan)"
    r"(?: Backward)?) (?:using|on) (\w+)"
)


def run(searches: int = SEARCHES) -> dict[str, Any]:
    from django.db import connection

    services.log(f"activity: loading {NOTIFICATIONS * PER_NOTIFICATION:,} deliveries")
    load = load_data()
    services.log(f"activity: loaded in {load['seconds']} s ({load['sizes']})")
    search = measure_searches(load, searches)
    services.log(f"activity: searches {search['api']}")
    purging = measure_purge()
    connection.close()
    figures = {"load": load, "search": search, "purge": purging}
    announce(
        "activity",
        {
            "search_p95_ms": search["api"]["all"]["p95_ms"],
            "exact_p95_ms": search["api"]["exact"]["p95_ms"],
            "prefix_p95_ms": search["api"]["prefix"]["p95_ms"],
            "sends/s_before": purging["before"]["per_s"],
            "during_purge": purging["during"]["per_s"],
            "after": purging["after"]["per_s"],
            "ratio_during_purge": purging["ratio"],
            "purge_seconds": purging["purge"]["seconds"],
        },
    )
    return figures


# --- 1. the data ------------------------------------------------------------------------


def load_data() -> dict[str, Any]:
    """Insert the notifications, deliveries and events in a few INSERT ... SELECT."""
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection

    target = bench_target()
    sender = bench_user()
    content_type = ContentType.objects.get_for_model(target)
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
        cursor.execute("SELECT setseed(%s)", [0.42])
        base_n = _max_id(cursor, "notify_tracking_notification")
        base_d = _max_id(cursor, "notify_tracking_delivery")
        steps = {}
        for name, sql, params in _load_statements(
            base_n, base_d, content_type.pk, str(target.pk), sender.pk
        ):
            began = time.monotonic()
            cursor.execute(sql, params)
            steps[name] = round(time.monotonic() - began, 1)
        for table in ("notification", "delivery", "deliveryevent"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('notify_tracking_{table}', 'id'), "
                f"(SELECT max(id) FROM notify_tracking_{table}))"
            )
        cursor.execute("SET synchronous_commit TO on")
    began = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            "VACUUM (ANALYZE) notify_tracking_notification, notify_tracking_delivery, "
            "notify_tracking_deliveryevent"
        )
    steps["vacuum_analyze"] = round(time.monotonic() - began, 1)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "steps": steps,
        "base_delivery_id": base_d,
        "sizes": _sizes(),
        "expired_deliveries": _expired_deliveries(),
    }


def _max_id(cursor, table: str) -> int:
    cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
    return cursor.fetchone()[0]


def _load_statements(base_n, base_d, content_type_id, object_id, sender_id):
    """(name, SQL, params) in order. Ages: notifications 1..100,000 are 46 to 90 days
    old, the others 0 to 44 days: a purge at any time of the run removes the former."""
    half = NOTIFICATIONS // 2
    statuses = "CASE " + " ".join(
        f"WHEN x.r < {share} THEN '{status}'" for status, share in STATUS_SHARES[:-1]
    ) + f" ELSE '{STATUS_SHARES[-1][0]}' END"  # fmt: skip
    kinds = "(ARRAY[" + ",".join(f"'{kind}'" for kind, _ in EVENT_STEPS) + "])"
    sources = "(ARRAY[" + ",".join(f"'{source}'" for _, source in EVENT_STEPS) + "])"
    yield (
        "recipients",
        """
        DROP TABLE IF EXISTS bench_activity_recipient;
        CREATE TABLE bench_activity_recipient AS
        SELECT n AS id,
               CASE WHEN n %% 6 = 0 THEN initcap(local) || '@' || initcap(domain)
                    WHEN n %% 6 = 1 THEN upper(local) || '@' || domain
                    ELSE local || '@' || domain END AS address
        FROM (
            SELECT n,
                   (%(first)s::text[])[1 + n %% %(nfirst)s]
                   || (ARRAY['.', '_', '', '-'])[1 + n %% 4]
                   || (%(last)s::text[])[1 + (n / %(nfirst)s) %% %(nlast)s]
                   || CASE WHEN n / (%(nfirst)s * %(nlast)s) > 0
                           THEN (n / (%(nfirst)s * %(nlast)s))::text ELSE '' END AS local,
                   (%(domains)s::text[])[1 + (n * 7919) %% %(ndomains)s] AS domain
            FROM generate_series(0, %(count)s - 1) AS n
        ) AS parts;
        ALTER TABLE bench_activity_recipient ADD PRIMARY KEY (id);
        """,
        {
            "first": FIRST, "nfirst": len(FIRST), "last": LAST, "nlast": len(LAST),
            "domains": DOMAINS, "ndomains": len(DOMAINS), "count": RECIPIENTS,
        },
    )  # fmt: skip
    yield (
        "notifications",
        f"""
        INSERT INTO notify_tracking_notification (
            id, content_type_id, object_id, channel, subject, text, html, sender_id,
            created_at, track_opens, track_clicks, request_delivery_report,
            request_read_receipt)
        SELECT %(base)s + n, %(ct)s, %(object_id)s, 'email',
               'New comment on task #' || n || ': ' || (ARRAY['the build fails on main',
               'login page is slow', 'weekly report', 'invoice 2024-' || (n %% 12 + 1),
               'deploy to staging'])[1 + n %% 5],
               'Alice commented on task #' || n || '.', '', %(sender)s,
               now() - CASE WHEN n <= {half}
                            THEN interval '46 days' + (1 - n::float8 / {half}) * interval '44 days'
                            ELSE (1 - (n - {half})::float8 / {half}) * interval '44 days' END
                     - random() * interval '1 hour',
               true, true, false, false
        FROM generate_series(1, {NOTIFICATIONS}) AS n
        """,
        {"base": base_n, "ct": content_type_id, "object_id": object_id, "sender": sender_id},
    )
    yield (
        "deliveries",
        f"""
        INSERT INTO notify_tracking_delivery (
            id, notification_id, recipient, recipient_name, channel, status, error, token,
            message_id, email_message_id, track_opens, track_clicks, open_count,
            machine_open_count, click_count, machine_click_count, created_at, sent_at,
            delivered_at, first_opened_at, last_opened_at, first_clicked_at, failed_at,
            updated_at, attempts)
        SELECT d.id, d.notification_id, d.recipient, '', d.channel, d.status,
               CASE WHEN d.status = 'bounced'
                    THEN '550 5.1.1 <' || d.recipient || '>: Recipient address rejected'
                    WHEN d.status = 'failed' THEN 'Connection refused by the provider'
                    ELSE '' END,
               gen_random_uuid(), 'esp-' || d.id, '<' || d.id || '@bench.example.com>',
               true, true,
               CASE WHEN d.status IN ('opened', 'clicked') THEN 1 + d.id %% 3 ELSE 0 END, 0,
               CASE WHEN d.status = 'clicked' THEN 1 ELSE 0 END, 0,
               d.created_at, d.created_at + interval '5 seconds',
               CASE WHEN d.status IN ('delivered', 'opened', 'clicked')
                    THEN d.created_at + interval '1 minute' END,
               CASE WHEN d.status IN ('opened', 'clicked')
                    THEN d.created_at + interval '2 hours' END,
               CASE WHEN d.status IN ('opened', 'clicked')
                    THEN d.created_at + interval '3 hours' END,
               CASE WHEN d.status = 'clicked' THEN d.created_at + interval '2 hours' END,
               CASE WHEN d.status IN ('bounced', 'failed', 'rejected')
                    THEN d.created_at + interval '1 minute' END,
               d.created_at + interval '3 hours', 1
        FROM (
            SELECT %(base_d)s + k AS id, %(base_n)s + (k - 1) / {PER_NOTIFICATION} + 1
                       AS notification_id,
                   CASE WHEN k %% 20 = 0 THEN (100000000 + k)::text ELSE r.address END
                       AS recipient,
                   CASE WHEN k %% 20 = 0 THEN 'telegram' ELSE 'email' END AS channel,
                   {statuses} AS status,
                   n.created_at
            FROM generate_series(1, {NOTIFICATIONS * PER_NOTIFICATION}) AS k
            CROSS JOIN LATERAL (SELECT random() AS r, random() AS pick, k AS keep) AS x
            JOIN bench_activity_recipient r
                 ON r.id = floor({RECIPIENTS} * power(x.pick, 2))::int
            JOIN notify_tracking_notification n
                 ON n.id = %(base_n)s + (k - 1) / {PER_NOTIFICATION} + 1
        ) AS d
        """,
        {"base_d": base_d, "base_n": base_n},
    )
    yield (
        "events",
        f"""
        INSERT INTO notify_tracking_deliveryevent (
            delivery_id, kind, occurred_at, recorded_at, source, is_machine,
            provider_event_id, user_agent, ip_address, details)
        SELECT d.id, {kinds}[step], d.created_at + step * interval '10 minutes',
               d.created_at + step * interval '10 minutes', {sources}[step],
               step = 3 AND d.id %% 4 = 0,
               CASE WHEN step = 2 THEN 'sg-' || d.id ELSE '' END,
               CASE WHEN step >= 3 THEN 'Mozilla/5.0 (Windows NT 10.0; Win64; x64)' ELSE '' END,
               NULL, '{{}}'::jsonb
        FROM notify_tracking_delivery d
        CROSS JOIN LATERAL generate_series(1, 1 + (d.id - %(base_d)s) %% 5) AS step
        WHERE d.id > %(base_d)s
        """,
        {"base_d": base_d},
    )
    yield ("drop_recipients", "DROP TABLE bench_activity_recipient", None)


def _sizes() -> dict[str, Any]:
    from django.db import connection

    sizes = {}
    with connection.cursor() as cursor:
        for table in ("notification", "delivery", "deliveryevent"):
            name = f"notify_tracking_{table}"
            cursor.execute(
                f"SELECT count(*), pg_size_pretty(pg_total_relation_size('{name}')) FROM {name}"
            )
            rows, size = cursor.fetchone()
            sizes[table] = {"rows": rows, "size": size}
    return sizes


def _expired_deliveries() -> int:
    from notify_tracking.models import Delivery

    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=RETENTION_DAYS)
    return Delivery.objects.filter(notification__created_at__lt=cutoff).count()


# --- 2. the searches --------------------------------------------------------------------


def measure_searches(load: dict[str, Any], count: int) -> dict[str, Any]:
    from django.urls import reverse
    from rest_framework.test import APIClient

    from notify_tracking.activity.filters import search

    rng = random.Random(SEED)
    addresses = _sample_addresses(load["base_delivery_id"], count, rng)
    queries = [("exact", {"recipient": _any_case(a, rng)}) for a in addresses]
    queries += [
        ("prefix", {"recipient_prefix": _any_case(_prefix(a, rng), rng)}) for a in addresses
    ]
    rng.shuffle(queries)
    client = APIClient()
    client.force_authenticate(user=bench_user())
    url = reverse("notify_tracking:api-activity")
    for _, params in queries[:20]:  # warm-up: caches, connection, first plans
        client.get(url, params)
    api: dict[str, list[float]] = {"exact": [], "prefix": []}
    bare: dict[str, list[float]] = {"exact": [], "prefix": []}
    found: dict[str, list[int]] = {"exact": [], "prefix": []}
    for kind, params in queries:
        started = time.perf_counter()
        response = client.get(url, params)
        api[kind].append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{params}: HTTP {response.status_code} {response.content[:200]!r}")
        found[kind].append(len(response.json()["results"]))
        started = time.perf_counter()
        list(search(params)[: PAGE + 1])
        bare[kind].append(time.perf_counter() - started)
    return {
        "searches": len(queries),
        "api": _percentiles(api),
        "query": _percentiles(bare),
        "rows_on_first_page": {
            kind: {"median": statistics.median(n), "empty": n.count(0), "full": n.count(PAGE)}
            for kind, n in found.items()
        },
        "plans": _plans(addresses, rng),
    }


def _sample_addresses(base_d: int, count: int, rng: random.Random) -> list[str]:
    """Addresses of random deliveries (a frequent recipient is drawn more often)."""
    from notify_tracking.models import Delivery

    total = NOTIFICATIONS * PER_NOTIFICATION
    ids = [base_d + rng.randint(1, total) for _ in range(count * 2)]
    rows = Delivery.objects.filter(pk__in=ids, channel="email").values_list("recipient", flat=True)
    addresses = list(rows)
    rng.shuffle(addresses)
    return addresses[:count]


def _any_case(text: str, rng: random.Random) -> str:
    """As stored, in lower case, in upper case, or capitalised: as support types it."""
    return rng.choice((text, text.lower(), text.upper(), text.title()))


def _prefix(address: str, rng: random.Random) -> str:
    """3 characters up to the whole local part and the '@'."""
    return address[: rng.randint(3, address.index("@") + 1)]


def _percentiles(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    every = [s for kind in samples.values() for s in kind]
    return {kind: _summary(values) for kind, values in (*samples.items(), ("all", every))}


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 2)

    return {"n": len(ordered), "p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "max_ms": round(ordered[-1] * 1000, 2)}  # fmt: skip


def _plans(addresses: list[str], rng: random.Random) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the first page of each kind of search."""
    from django.db.models import Count

    from notify_tracking.activity.filters import search
    from notify_tracking.models import Delivery

    busiest = (
        Delivery.objects.filter(channel="email")
        .values("recipient")
        .annotate(n=Count("pk"))
        .order_by("-n")
        .first()
    )
    typical = addresses[0]
    kinds = {
        "exact (typical address, other case)": {"recipient": typical.upper()},
        f"exact (busiest address: {busiest['n']} deliveries)": {
            "recipient": busiest["recipient"].lower()
        },
        "prefix (local part and @)": {"recipient_prefix": typical[: typical.index("@") + 1]},
        "prefix (3 characters: many matches)": {"recipient_prefix": typical[:3].title()},
    }
    plans = {}
    for name, params in kinds.items():
        text = search(params)[: PAGE + 1].explain(analyze=True, buffers=True)
        plans[name] = {
            "params": params,
            "nodes": [f"{node} {index}" for node, index in PLAN_NODE.findall(text)],
            "execution_ms": _execution_ms(text),
            "plan": text,
        }
    return plans


def _execution_ms(plan: str) -> float | None:
    match = re.search(r"Execution Time: ([\d.]+) ms", plan)
    return float(match.group(1)) if match else None


# --- 3. the purge while sending ------------------------------------------------------------


def measure_purge(concurrency: int = 2) -> dict[str, Any]:
    from notify_tracking.models import Notification

    with services.celery_worker("activity-send", concurrency):
        marker = Notification.objects.order_by("-pk").values_list("pk", flat=True).first()
        producer = Producer(marker)
        producer.keep_busy(10.0)  # warm-up, not measured
        before = producer.window(WINDOW)
        purge_process, began = _start_purge(), time.monotonic()
        start = _now()
        while purge_process.poll() is None:
            producer.feed()
            time.sleep(0.05)
        during = producer.measure(start, _now())
        purge_seconds = time.monotonic() - began
        output = purge_process.stdout.read() if purge_process.stdout else ""
        if purge_process.returncode != 0:
            raise RuntimeError(f"purge failed ({purge_process.returncode}): {output[-500:]}")
        after = producer.window(WINDOW)
        producer.drain()
    baseline = (before["per_s"] + after["per_s"]) / 2
    return {
        "concurrency": concurrency,
        "before": before,
        "during": during,
        "after": after,
        "ratio": ratio(during["per_s"], baseline),
        "purge": {
            "seconds": round(purge_seconds, 1),
            "output": output.strip(),
            **_removed(output),
        },
        "expired_left": _expired_deliveries(),
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _start_purge() -> subprocess.Popen:
    """``manage.py notify_tracking_purge``, as cron or the Celery task would run it."""
    return subprocess.Popen(
        [services.PYTHON, "-m", "django", "notify_tracking_purge"],
        cwd=services.ROOT,
        env=services.bench_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _removed(output: str) -> dict[str, int]:
    match = re.search(r"(\d+) notifications, (\d+) deliveries, (\d+) events", output)
    if not match:
        return {}
    notifications, deliveries, events = map(int, match.groups())
    return {"notifications": notifications, "deliveries": deliveries, "events": events}


class Producer:
    """``notify()`` in the bench process, keeping ``BACKLOG`` deliveries queued."""

    def __init__(self, marker: int):
        self.marker = marker
        self.number = 20_000_000

    def queued(self) -> int:
        from notify_tracking.models import Delivery

        return Delivery.objects.filter(notification_id__gt=self.marker, status="queued").count()

    def feed(self) -> None:
        from notify_tracking import notify

        from .common import addresses

        if self.queued() >= BACKLOG:
            return
        target = bench_target()
        for _ in range(BACKLOG // 10):
            notify(target, addresses(self.number, 10), **email(self.number))
            self.number += 10

    def keep_busy(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.feed()
            time.sleep(0.05)

    def window(self, seconds: float) -> dict[str, Any]:
        start = _now()
        self.keep_busy(seconds)
        return self.measure(start, _now())

    def measure(self, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        """Deliveries sent between ``start`` and ``end`` (their ``sent_at``)."""
        from notify_tracking.models import Delivery

        moments = sorted(
            Delivery.objects.filter(
                notification_id__gt=self.marker, sent_at__gte=start, sent_at__lt=end
            ).values_list("sent_at", flat=True)
        )
        seconds = (end - start).total_seconds()
        edges = [start, *moments, end]
        gap = max((b - a).total_seconds() for a, b in itertools.pairwise(edges))
        return {
            "seconds": round(seconds, 1),
            "sent": len(moments),
            "per_s": round(len(moments) / seconds, 1),
            "longest_pause_s": round(gap, 2),
            "queued_at_end": self.queued(),
        }

    def drain(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.queued() and time.monotonic() < deadline:
            time.sleep(0.2)
