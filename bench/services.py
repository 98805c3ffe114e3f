"""The processes a benchmark needs: PostgreSQL, Redis, Celery workers, gunicorn, wrk.

Every process the bench starts runs in a process group of its own and is stopped by
that group's id when its ``with`` block ends, also on failure. PostgreSQL and Redis
are the machine's: they are started only if they are down, and never stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
LOG_DIR = Path(os.environ.get("NT_BENCH_LOG_DIR", "/tmp/nt_bench_logs"))  # noqa: S108

#: Databases the bench must never touch (the test suite's and other sessions').
FORBIDDEN_DATABASES = {
    "test", "ntlead", "nt_activity", "postgres", "root", "template0", "template1",
}  # fmt: skip


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def bench_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def wait_until(check, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the machine's services ---------------------------------------------------------


def psql(sql: str, database: str = "postgres") -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-w", "-d", database, "-tAc", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def ensure_postgresql() -> None:
    if not port_open(5432):
        versions = sorted(os.listdir("/etc/postgresql"))
        log(f"starting PostgreSQL {versions[-1]}")
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
            check=False,
        )
        wait_until(lambda: port_open(5432), 60, "PostgreSQL")


def ensure_redis() -> None:
    if not port_open(6379):
        log("starting Redis")
        Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
        Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1",
                "--port", "6379", "--save", "", "--appendonly", "no",
                "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
            ],
            check=True,
        )  # fmt: skip
        wait_until(lambda: port_open(6379), 30, "Redis")


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("installing wrk (Debian package)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    return shutil.which("wrk") or "wrk"


def _check_database_name(name: str) -> None:
    if name in FORBIDDEN_DATABASES or not name.replace("_", "").isalnum():
        raise SystemExit(f"refusing database {name!r}: the bench needs a database of its own")


def create_database(name: str) -> None:
    _check_database_name(name)
    drop_database(name)
    psql(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    _check_database_name(name)
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_client():
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.REDIS_URL)


def flush_redis() -> None:
    """Empty the bench's own Redis DB (never another)."""
    client = redis_client()
    db = client.connection_pool.connection_kwargs.get("db", 0)
    if db == 0:
        raise SystemExit("refusing to flush Redis DB 0: the bench needs a DB of its own")
    client.flushdb()


def versions() -> dict[str, str]:
    import django

    return {
        "python": sys.version.split()[0],
        "django": django.get_version(),
        "postgresql": psql("SHOW server_version"),
        "redis": redis_client().info("server")["redis_version"],
        "celery": _dist_version("celery"),
        "django-anymail": _dist_version("django-anymail"),
        "django-post-office": _dist_version("django-post-office"),
        "gunicorn": _dist_version("gunicorn"),
        "wrk": _wrk_version(),
    }


def machine() -> dict[str, object]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    model = ""
    with contextlib.suppress(OSError, StopIteration):
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line for line in cpuinfo if line.startswith("model name")).split(":", 1)[1]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model.strip(),
        "memory_gib": round(total_kb / 1024 / 1024, 1),
        "kernel": os.uname().release,
    }


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _wrk_version() -> str:
    wrk = shutil.which("wrk")
    if not wrk:
        return "not installed"
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).split("\n")[0].strip()


# --- processes the bench starts -----------------------------------------------------


@contextlib.contextmanager
def process(
    name: str, args: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Run ``args`` in a process group of its own; stop the whole group afterwards."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env or bench_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def celery_worker(name: str, concurrency: int = 2) -> Iterator[subprocess.Popen]:
    """A prefork worker on the bench's broker, ready when this yields.

    The same settings for every side of a benchmark: prefork, ``concurrency``
    children, Celery's default prefetch, no gossip/mingle/heartbeat (which would only
    add broker traffic), no ``--max-tasks-per-child``.
    """
    args = [
        str(BIN / "celery"), "-A", "bench.celery_app", "worker",
        "--pool=prefork", f"--concurrency={concurrency}",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel=WARNING", f"--hostname={name}@%h",
    ]  # fmt: skip
    with process(f"worker-{name}", args) as proc:
        wait_until(lambda: len(children(proc.pid)) >= concurrency, 60, f"worker {name}")
        time.sleep(1.0)  # the children connect to the broker after they fork
        yield proc


@contextlib.contextmanager
def gunicorn(workers: int = 2, threads: int = 4) -> Iterator[tuple[int, list[int]]]:
    """gunicorn on 127.0.0.1 with the bench's WSGI app; yields its port and worker pids."""
    port = free_port()
    args = [
        str(BIN / "gunicorn"), "bench.wsgi:application",
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
        "--log-level", "warning", "--keep-alive", "30",
        # Each worker listens on a socket of its own and the kernel spreads connections
        # over them. On one shared socket, whichever worker woke first could accept all
        # of wrk's connections (8 of 44 bare rounds of earlier runs): one process then
        # served them all, on one core (its GIL), at a third to a half of the speed.
        "--reuse-port",
    ]  # fmt: skip
    with process("gunicorn", args) as proc:
        wait_until(lambda: port_open(port), 60, "gunicorn")
        wait_until(lambda: len(children(proc.pid)) >= workers, 60, "gunicorn workers")
        yield port, children(proc.pid)


def connections_per_worker(port: int, workers: list[int]) -> list[int]:
    """How many established connections to ``port`` each of ``workers`` holds (from
    /proc: the sockets in /proc/net/tcp, the descriptors of each process). IPv4 only,
    as the bench binds 127.0.0.1; all zeros when /proc cannot be read."""
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:  # ESTABLISHED
                inodes.add(f"socket:[{inode}]")
    counts = []
    for pid in workers:
        held = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    held += os.readlink(fd) in inodes
        counts.append(held)
    return counts


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s direct children (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return sorted(found)


def memory_of(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of ``pid``, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    return values


#: The bench's own long-lived processes whose CPU time is reported, by ``comm``.
#: (PostgreSQL and Redis are shared with the rest of the machine, and a Celery task
#: closes its database connection when it ends: their CPU time is not told apart.)
CPU_GROUPS = ("gunicorn", "celery", "postgres", "wrk", "redis")


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds used so far by each group of processes (user + system)."""
    tick = os.sysconf("SC_CLK_TCK")
    own = os.getpid()
    totals = dict.fromkeys((*CPU_GROUPS, "bench"), 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / tick
            if int(entry.name) == own:
                totals["bench"] += seconds
            else:
                group = next((g for g in CPU_GROUPS if comm.startswith(g)), None)
                if group:
                    totals[group] += seconds
    return totals


@contextlib.contextmanager
def cpu_usage(into: dict) -> Iterator[None]:
    """Fill ``into`` with the CPU share (% of one core) of each group during the block."""
    seconds: dict[str, float] = {}
    began = time.monotonic()
    with cpu_seconds(seconds):
        yield
    wall = time.monotonic() - began
    for group, used in seconds.items():
        if used > 0.05:
            into[group] = round(100 * used / wall)


@contextlib.contextmanager
def cpu_seconds(into: dict) -> Iterator[None]:
    """Add to ``into`` the CPU seconds each group of processes used during the block."""
    start = cpu_snapshot()
    yield
    for group, seconds in cpu_snapshot().items():
        into[group] = into.get(group, 0.0) + max(0.0, seconds - start.get(group, 0.0))


def commit_latency(samples: int = 200) -> dict[str, float]:
    """Median and p90 time (ms) of one single-row INSERT committed on its own, in the
    bench's database: what one durable transaction costs on this machine right now
    (it waits for the WAL to reach the disk, whose speed varies with the machine's load)."""
    import statistics

    from django.db import connection

    timings = []
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (id serial, n int)")
        for n in range(samples):
            started = time.perf_counter()
            cursor.execute("INSERT INTO bench_commit_probe (n) VALUES (%s)", [n])
            timings.append(time.perf_counter() - started)
        cursor.execute("DROP TABLE bench_commit_probe")
    timings.sort()
    return {
        "median_ms": round(statistics.median(timings) * 1000, 3),
        "p90_ms": round(timings[int(len(timings) * 0.9)] * 1000, 3),
    }


def git_revision() -> dict[str, object]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.rstrip("\n")  # porcelain lines may begin with a space

    changed = [line[3:] for line in git("status", "--porcelain", "notify_tracking").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "app_files_changed": changed}
