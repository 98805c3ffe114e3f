"""Pixel: requests per second of the open pixel vs a bare Django view, under gunicorn.

Both URLs are served by the same gunicorn (``WORKERS`` gthread workers, ``THREADS``
threads each, persistent PostgreSQL connections) with the same middleware; the bare
view answers the same GIF and headers and records nothing. wrk loads each for
``DURATION`` seconds after a warm-up, cycling through ``TOKENS`` different valid
tokens (bench/pixel.lua). A pixel request only keeps the open (one INSERT of a
PendingOpen); a Celery worker (prefork, 1 child, on the same two cores) applies them
in batches while wrk runs. After the run, the bench waits until no open is left
waiting, then counts the opens recorded (DeliveryEvent rows from the pixel) and
compares them with wrk's request count; how long the last ones took to apply after
the load ended is reported too.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from . import fixtures, profiling, services
from .common import announce, ratio, wait_for_count

TOKENS = 4000
WORKERS = 2
THREADS = 4
CONNECTIONS = 8
DURATION = 20
WARMUP = 5
DRAIN_TIMEOUT = 300
LUA = Path(__file__).resolve().parent / "pixel.lua"


def run() -> dict[str, Any]:
    from django.urls import reverse

    from notify_tracking.tracking.tokens import sign_open

    deliveries = fixtures.sent_deliveries(TOKENS, start=40_000_000)
    tokens = [sign_open(delivery.token) for delivery in deliveries]
    pixel_paths = [reverse("notify_tracking:open", kwargs={"token": t}) for t in tokens]
    bare_paths = [reverse("bare-pixel", kwargs={"token": t}) for t in tokens]
    ids = [delivery.pk for delivery in deliveries]

    with tempfile.TemporaryDirectory(prefix="nt_bench_") as folder:
        pixel_file = Path(folder) / "pixel.txt"
        bare_file = Path(folder) / "bare.txt"
        pixel_file.write_text("\n".join(pixel_paths) + "\n")
        bare_file.write_text("\n".join(bare_paths) + "\n")
        with services.celery_worker("pixel", concurrency=1):
            with services.gunicorn(WORKERS, THREADS) as (port, workers):
                load = services.load_average()
                cpu_bare: dict[str, int] = {}
                cpu_pixel: dict[str, int] = {}
                _wrk(port, bare_file, WARMUP)
                with services.cpu_usage(cpu_bare):
                    bare = _wrk(port, bare_file, DURATION)
                _wrk(port, pixel_file, WARMUP)
                _drain()  # the warm-up's opens, before counting
                before = _opens(ids)
                with profiling.sampling("pixel", workers), services.cpu_usage(cpu_pixel):
                    pixel = _wrk(port, pixel_file, DURATION)
                ended = time.monotonic()
            # gunicorn has stopped: every answered request has inserted its open
            drained = _drain()
        after = _opens(ids)

    recorded = after - before
    figures = {
        "tokens": TOKENS,
        "server": f"gunicorn {WORKERS} workers x {THREADS} threads (gthread)",
        "wrk": f"1 thread, {CONNECTIONS} connections, {DURATION} s after {WARMUP} s warm-up",
        "pixel_rps": pixel["rps"],
        "bare_rps": bare["rps"],
        "ratio": ratio(pixel["rps"], bare["rps"]),
        "pixel_p99_ms": pixel["p99_ms"],
        "bare_p99_ms": bare["p99_ms"],
        "pixel_requests": pixel["requests"],
        "opens_recorded": recorded,
        "drain_seconds": round(drained - ended, 1),
        "pixel": {**pixel, "cpu_percent": cpu_pixel},
        "bare": {**bare, "cpu_percent": cpu_bare},
        "load_before": load,
    }
    announce(
        "pixel",
        {
            "pixel_rps": pixel["rps"],
            "bare_rps": bare["rps"],
            "ratio": figures["ratio"],
            "p99_ms": f"{pixel['p99_ms']} vs {bare['p99_ms']}",
            "requests": pixel["requests"],
            "opens_recorded": recorded,
            "applied_within_s_after_load": figures["drain_seconds"],
        },
    )
    return figures


def _drain() -> float:
    """Run the task as beat would, wait until no open waits; the monotonic time it did."""
    from notify_tracking.tasks import apply_pending_opens
    from notify_tracking.tracking.pending import waiting

    apply_pending_opens.delay()
    return wait_for_count(lambda: int(waiting() == 0), 1, DRAIN_TIMEOUT, "opens left waiting")


def _opens(delivery_ids: list[int]) -> int:
    from notify_tracking.models import DeliveryEvent

    return DeliveryEvent.objects.filter(
        delivery_id__in=delivery_ids, source="pixel", kind="opened"
    ).count()


def _wrk(port: int, paths: Path, seconds: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            services.ensure_wrk(), "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
            "-s", str(LUA), f"http://127.0.0.1:{port}",
        ],
        env={**services.bench_env(), "PATHS": str(paths)},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout  # fmt: skip
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(raw[key] for key in raw if key.endswith("_errors") or key == "timeouts")
    return {
        "requests": raw["requests"],
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "errors": errors,
    }
