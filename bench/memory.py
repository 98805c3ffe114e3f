"""Memory: peak RSS of one Celery worker child after 10,000 and 30,000 deliveries.

One prefork worker with a single child (``--concurrency=1``, no
``--max-tasks-per-child``): every send task runs in that one process. ``notify()``
enqueues the deliveries (10 per notification, tracking on, HTML body); after the
warm-up and at each point (10,000 then 30,000 deliveries sent in all; 10,000, 50,000
and 100,000 with ``--full``) the child's ``VmHWM`` (peak resident set) and ``VmRSS`` are read
from /proc. A leak shows as RSS growing with the count.
"""

from __future__ import annotations

import time
from typing import Any

from . import services
from .common import announce, wait_for_count
from .send import notify_many, sent_since

WARMUP = 500
TIMEOUT = 1800


def run(points: tuple[int, ...] = (10_000, 30_000)) -> dict[str, Any]:
    readings = []
    with services.celery_worker("memory", concurrency=1) as worker:
        (child,) = services.children(worker.pid)
        marker = notify_many(WARMUP, start=90_000_000)
        wait_for_count(lambda: sent_since(marker), WARMUP, TIMEOUT, "memory warm-up", poll=0.5)
        readings.append({"deliveries": 0, "warmup": WARMUP, **services.memory_of(child)})
        sent = 0
        started = time.monotonic()
        for point in points:
            marker = notify_many(point - sent, start=100_000_000 + sent)
            wait_for_count(
                lambda n=point - sent, m=marker: sent_since(m), point - sent, TIMEOUT,
                "memory", poll=0.5,
            )  # fmt: skip
            sent = point
            elapsed = time.monotonic() - started
            readings.append(
                {"deliveries": point, "seconds": round(elapsed, 1), **services.memory_of(child)}
            )
        if services.children(worker.pid) != [child]:
            raise RuntimeError("the worker's child was replaced during the run")
    for reading in readings:
        reading["VmHWM_MiB"] = round(reading.pop("VmHWM") / 1024, 1)
        reading["VmRSS_MiB"] = round(reading.pop("VmRSS") / 1024, 1)
    first, last = readings[1], readings[-1]
    figures = {
        "pool": "prefork, 1 child, no --max-tasks-per-child",
        "readings": readings,
        "growth_MiB": round(last["VmHWM_MiB"] - first["VmHWM_MiB"], 1),
        "ratio": round(last["VmHWM_MiB"] / first["VmHWM_MiB"], 3),
        "per_s": round(last["deliveries"] / last["seconds"], 1),
    }
    announce(
        "memory",
        {
            **{f"VmHWM@{r['deliveries']}": f"{r['VmHWM_MiB']} MiB" for r in readings},
            "ratio": figures["ratio"],
            "deliveries/s": figures["per_s"],
        },
    )
    return figures
