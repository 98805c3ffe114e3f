"""``make bench``: run every benchmark, write bench/results/latest.md and latest.json.

    python -m bench.run [--only send,pixel,...] [--full] [--keep-db]

Uses its own PostgreSQL database (``nt_bench``, created and dropped here) and its own
Redis DB (15, flushed here); starts PostgreSQL and Redis if they are down, and the
Celery workers and gunicorn it needs, and stops those when done, also on failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from . import services
from .common import setup_django

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = ("send", "memory", "webhook", "pixel", "badges", "activity")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(ORDER))
    parser.add_argument(
        "--full",
        action="store_true",
        default=bool(os.environ.get("BENCH_FULL")),
        help="memory benchmark up to 100,000 deliveries (default 30,000)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        default=bool(os.environ.get("BENCH_PROFILE")),
        help="sample the loaded processes with py-spy (results/profiles/)",
    )
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="diagnostic: synchronous_commit=off on the bench database",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the nt_bench database")
    args = parser.parse_args(argv)
    from . import profiling

    profiling.ENABLED = args.profile
    chosen = [name for name in ORDER if not args.only or name in args.only.split(",")]

    started = time.monotonic()
    services.ensure_postgresql()
    services.ensure_redis()
    if "pixel" in chosen:
        services.ensure_wrk()
    setup_django()
    from django.conf import settings

    db_name = settings.DATABASES["default"]["NAME"]
    services.log(f"database {db_name}, broker {settings.REDIS_URL}")
    services.create_database(db_name)
    if args.async_commit:
        services.psql(f'ALTER DATABASE "{db_name}" SET synchronous_commit TO off')
    services.flush_redis()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    commit_latency: dict[str, Any] = {}
    revision = services.git_revision()
    try:
        _migrate()
        commit_latency["before"] = services.commit_latency()
        services.log(f"PostgreSQL commit latency: {commit_latency['before']}")
        for name in chosen:
            services.log(f"--- {name} ---")
            try:
                before = services.commit_latency()
                began = time.monotonic()
                figures = _run_one(name, args)
                results[name] = {
                    **figures,
                    "bench_seconds": round(time.monotonic() - began, 1),
                    "commit_latency_before": before,
                    "commit_latency_after": services.commit_latency(),
                }
            except Exception as error:  # a failed benchmark is reported, the others run
                traceback.print_exc()
                errors[name] = f"{type(error).__name__}: {error}"
        commit_latency["after"] = services.commit_latency()
        services.log(f"PostgreSQL commit latency: {commit_latency['after']}")
    finally:
        from django.db import connections

        connections.close_all()
        services.flush_redis()
        if not args.keep_db:
            services.drop_database(db_name)

    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": services.machine(),
        "versions": services.versions(),
        "revision": revision,
        "commit_latency": commit_latency,
        "load_average_end": services.load_average(),
        "synchronous_commit": "off" if args.async_commit else "on",
        "total_seconds": round(time.monotonic() - started, 1),
        "results": results,
        "errors": errors,
    }
    from .report import write

    stem = (
        "profiled" if args.profile
        else "async-commit" if args.async_commit
        else "activity" if chosen == ["activity"]
        else "partial" if args.only
        else "latest"
    )  # fmt: skip
    write(report, RESULTS, stem)
    services.log(f"done in {report['total_seconds']} s; results in {RESULTS}")
    return 1 if errors else 0


def _migrate() -> None:
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
        check=True,
        env=services.bench_env(),
        cwd=services.ROOT,
    )


def _run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name == "send":
        from . import send

        return send.run(size=int(os.environ.get("BENCH_SEND_SIZE", 8000)))
    if name == "memory":
        from . import memory

        return memory.run(points=(10_000, 50_000, 100_000) if args.full else (10_000, 30_000))
    if name == "webhook":
        from . import webhook

        return webhook.run()
    if name == "pixel":
        from . import pixel

        return pixel.run()
    if name == "badges":
        from . import badges

        return badges.run()
    if name == "activity":
        from . import activity

        return activity.run()
    raise ValueError(name)


if __name__ == "__main__":
    sys.exit(main())
