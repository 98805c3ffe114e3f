"""Pixel: requests per second of the open pixel vs a bare Django view, under gunicorn.

Both URLs are served by the same gunicorn (``WORKERS`` gthread workers, ``THREADS``
threads each, each worker on a socket of its own (``--reuse-port``), persistent
PostgreSQL connections) with the same middleware; the bare view answers the same GIF
and headers and records nothing. wrk loads each for ``DURATION`` seconds after a
warm-up, cycling through ``TOKENS`` different valid tokens (bench/pixel.lua); each
round reports how its connections were spread over the workers (a round that left a
worker without one is run again: see ``_round``). A pixel request only
keeps the open (one INSERT of a PendingOpen); a Celery task applies them in batches.
The pixel is loaded twice:

1. the view alone, in 4 rounds alternating with the bare view and with the issue's
   reference point, a *naive* view (bench/benchapp/views.py: the same token check,
   then one autocommitted ``UPDATE`` of the delivery per request, on deliveries of its
   own): no worker runs during the load; then one worker (prefork, 1 child) applies
   what waits, and the bench reports how many opens it applied per second;
2. with that worker applying opens on the same two cores while wrk runs (the ratio
   of the table), in 4 rounds alternating with the bare view again (measured anew, the
   baseline of this ratio); after each pixel round the bench waits until no open is
   left waiting (the seconds it took are reported) before the next bare round. Then it
   counts the opens recorded (DeliveryEvent rows from the pixel) and compares them
   with wrk's request count.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import fixtures, profiling, services
from .common import announce, ratio, wait_for_count

TOKENS = 4000
WORKERS = 2
THREADS = 4
CONNECTIONS = 8
DURATION = 20
#: The bare view and the view alone alternate in this many rounds of DURATION in all.
ROUNDS = 4
WARMUP = 5
#: How many times a round in which a worker held no connection is run again.
RETRIES = 3
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
    # The naive view updates deliveries of its own: its dead rows stay out of the pixel's.
    naive_deliveries = fixtures.sent_deliveries(TOKENS, start=41_000_000)
    naive_paths = [
        reverse("naive-pixel", kwargs={"token": sign_open(delivery.token)})
        for delivery in naive_deliveries
    ]
    naive_ids = [delivery.pk for delivery in naive_deliveries]

    with tempfile.TemporaryDirectory(prefix="nt_bench_") as folder:
        pixel_file = Path(folder) / "pixel.txt"
        bare_file = Path(folder) / "bare.txt"
        naive_file = Path(folder) / "naive.txt"
        pixel_file.write_text("\n".join(pixel_paths) + "\n")
        bare_file.write_text("\n".join(bare_paths) + "\n")
        naive_file.write_text("\n".join(naive_paths) + "\n")
        with services.gunicorn(WORKERS, THREADS) as (port, workers):
            load = services.load_average()
            cpu_pixel: dict[str, int] = {}
            _wrk(port, bare_file, WARMUP)
            _wrk(port, pixel_file, WARMUP)
            _wrk(port, naive_file, WARMUP)
            naive_before = _naive_opens(naive_ids)
            # 1. The view alone (the worker that applies the opens is stopped), the
            # bare view and the naive view, in alternating rounds: the machine's load
            # moves within seconds.
            sides = (("bare", bare_file), ("alone", pixel_file), ("naive", naive_file))
            rounds: dict[str, list[dict[str, Any]]] = {side: [] for side, _ in sides}
            cpu: dict[str, dict[str, float]] = {side: {} for side, _ in sides}
            for _ in range(ROUNDS):
                for side, paths in sides:
                    rounds[side].append(_round(port, paths, workers, cpu[side]))
            bare, alone = _combined(rounds["bare"]), _combined(rounds["alone"])
            naive = _combined(rounds["naive"])
            naive_counted = _naive_opens(naive_ids) - naive_before  # rounds run again too
            with services.celery_worker("pixel-apply", concurrency=1):
                started = time.monotonic()
                waiting = _waiting()
                applied_in = _drain() - started
            # 2. The view with the worker applying opens on the same two cores, in
            # rounds alternating with the bare view again; the opens left after a
            # round are applied before the next bare round (its time is reported).
            rounds["with_worker"], rounds["bare_2"], drains = [], [], []
            cpu["with_worker"], cpu["bare_2"] = {}, {}
            with services.celery_worker("pixel", concurrency=1):
                before = _opens(ids)
                with profiling.sampling("pixel", workers), services.cpu_usage(cpu_pixel):
                    for _ in range(ROUNDS):
                        rounds["bare_2"].append(_round(port, bare_file, workers, cpu["bare_2"]))
                        rounds["with_worker"].append(
                            _round(
                                port, pixel_file, workers, cpu["with_worker"], before_retry=_drain
                            )
                        )
                        # The opens left at the round's end are part of its work.
                        with services.cpu_seconds(cpu["with_worker"]):
                            ended = time.monotonic()
                            drains.append(round(_drain() - ended, 1))
            pixel, bare_2 = _combined(rounds["with_worker"]), _combined(rounds["bare_2"])
        cpu_per_request = {
            side: _per_request(cpu[side], _combined(rounds[side])["requests"]) for side in cpu
        }
        after = _opens(ids)

    recorded = after - before
    figures = {
        "tokens": TOKENS,
        "server": f"gunicorn {WORKERS} workers x {THREADS} threads (gthread)",
        "wrk": (
            f"1 thread, {CONNECTIONS} connections, {DURATION} s after {WARMUP} s warm-up"
            f" (bare, alone and naive: {ROUNDS} alternating rounds of {DURATION // ROUNDS} s)"
        ),
        "pixel_rps": pixel["rps"],
        "bare_rps": bare["rps"],
        "bare_2_rps": bare_2["rps"],
        "ratio": ratio(pixel["rps"], bare_2["rps"]),
        "alone_rps": alone["rps"],
        "alone_p99_ms": alone["p99_ms"],
        "alone_ratio": ratio(alone["rps"], bare["rps"]),
        "naive_rps": naive["rps"],
        "naive_p99_ms": naive["p99_ms"],
        "naive_ratio": ratio(naive["rps"], bare["rps"]),
        "naive_counted": naive_counted,
        # Where the pixel kept its opens: "database" (the default) or "spool"
        # (NT_BENCH_OPEN_SPOOL: OPEN_SPOOL_DIR, docs/tracking.md).
        "opens_kept_in": "spool" if os.environ.get("NT_BENCH_OPEN_SPOOL") else "database",
        "naive_requests": naive["requests_sent"],
        "cpu_us_per_request": cpu_per_request,
        "apply_rate": round(waiting / applied_in, 1) if applied_in > 0 else None,
        "applied_after_alone": waiting,
        "pixel_p99_ms": pixel["p99_ms"],
        "bare_p99_ms": bare_2["p99_ms"],
        # wrk's responses in all the pixel's rounds with the worker, run again or not:
        # every one of them is an open to be recorded.
        "pixel_requests": pixel["requests_sent"],
        "opens_recorded": recorded,
        "drain_seconds": max(drains),
        "drain_seconds_per_round": drains,
        "pixel": {**pixel, "cpu_percent": cpu_pixel},
        "alone": alone,
        "bare": bare,
        "bare_2": bare_2,
        "naive": naive,
        "load_before": load,
    }
    announce(
        "pixel",
        {
            "pixel_rps": pixel["rps"],
            "bare_rps": f"{bare['rps']} then {bare_2['rps']}",
            "ratio": figures["ratio"],
            "alone_rps": alone["rps"],
            "alone_ratio": figures["alone_ratio"],
            "naive_rps": naive["rps"],
            "naive_ratio": figures["naive_ratio"],
            "naive_counted": f"{naive_counted} of {naive['requests_sent']}",
            "cpu_us_per_request": cpu_per_request,
            "apply_rate_per_s": figures["apply_rate"],
            "p99_ms": f"{pixel['p99_ms']} vs {bare_2['p99_ms']}",
            "requests": pixel["requests_sent"],
            "opens_recorded": recorded,
            "applied_within_s_after_load": figures["drain_seconds"],
        },
    )
    return figures


def _round(
    port: int,
    paths: Path,
    workers: list[int],
    cpu: dict[str, float] | None = None,
    before_retry: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """One round of ``DURATION // ROUNDS`` seconds (its CPU seconds added to ``cpu``).

    A round in which a worker held none of wrk's connections (the kernel hashed them
    all to the other worker's socket) measured one worker, not the bench's two: it is
    run again, after ``before_retry()``, at most ``RETRIES`` times. Only the last
    attempt's figures and CPU count; ``requests_sent`` counts the responses of every
    attempt (each pixel request is an open to be recorded), ``runs`` the attempts.
    """
    sent = 0
    for attempt in range(RETRIES + 1):
        if attempt and before_retry is not None:
            before_retry()
        spent: dict[str, float] = {}
        with services.cpu_seconds(spent):
            result = _wrk(port, paths, DURATION // ROUNDS, workers)
        sent += result["requests"]
        spread = result["connections_per_worker"]
        if spread is None or min(spread) > 0:
            break
    spent["wrk"] = spent.get("wrk", 0.0) + result["cpu_seconds"]
    if cpu is not None:
        for group, seconds in spent.items():
            cpu[group] = cpu.get(group, 0.0) + seconds
    return {**result, "runs": attempt + 1, "requests_sent": sent}


def _per_request(seconds: dict[str, float], requests: int) -> dict[str, float]:
    """CPU microseconds per request of each group of processes, and their total."""
    spent = {group: round(1e6 * used / requests) for group, used in seconds.items()}
    return {**spent, "total": sum(spent.values())}


def _combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one side as one: all requests over all seconds; the worst p99 and max."""
    requests = sum(run["requests"] for run in runs)
    seconds = sum(run["seconds"] for run in runs)
    return {
        "requests": requests,
        "rps": round(requests / seconds, 1),
        "p50_ms": statistics.median(run["p50_ms"] for run in runs),
        "p99_ms": max(run["p99_ms"] for run in runs),
        "max_ms": max(run["max_ms"] for run in runs),
        "errors": sum(run["errors"] for run in runs),
        "rounds": [run["rps"] for run in runs],
        "connections_per_worker": [run["connections_per_worker"] for run in runs],
        "rounds_run_again": sum(run["runs"] - 1 for run in runs),
        "requests_sent": sum(run["requests_sent"] for run in runs),
    }


def _waiting() -> int:
    from notify_tracking.tracking.pending import waiting

    return waiting()


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


def _naive_opens(delivery_ids: list[int]) -> int:
    """What the naive view counted: the open counts of its deliveries, summed."""
    from django.db.models import Sum

    from notify_tracking.models import Delivery

    total = Delivery.objects.filter(pk__in=delivery_ids).aggregate(n=Sum("open_count"))["n"]
    return total or 0


def _wrk(port: int, paths: Path, seconds: int, workers: list[int] | None = None) -> dict[str, Any]:
    """One wrk run; with ``workers``, also how its connections were spread over them
    (counted half-way through the run). ``cpu_seconds`` is wrk's own CPU time: it ends
    before ``services.cpu_seconds`` looks again, so only its parent's rusage sees it."""
    command = [
        services.ensure_wrk(), "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
        "-s", str(LUA), f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    env = {**services.bench_env(), "PATHS": str(paths)}
    pipe = subprocess.PIPE
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with subprocess.Popen(command, env=env, stdout=pipe, stderr=pipe, text=True) as wrk:
        spread = None
        if workers:
            time.sleep(seconds / 2)
            counted = services.connections_per_worker(port, workers)
            spread = sorted(counted) if sum(counted) else None  # None: could not count
        try:
            out, err = wrk.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            wrk.kill()
            wrk.communicate()
            raise
    if wrk.returncode:
        raise subprocess.CalledProcessError(wrk.returncode, command, out, err)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(raw[key] for key in raw if key.endswith("_errors") or key == "timeouts")
    return {
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "errors": errors,
        "connections_per_worker": spread,
        "cpu_seconds": cpu_seconds,
    }
