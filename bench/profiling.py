"""``--profile``: sample the processes a benchmark loads with py-spy, and summarise.

py-spy samples the stacks of the running processes (``--format raw``: one line per
distinct stack with its sample count). The summary, written to
``bench/results/profiles/<name>.txt`` (the raw samples stay in the log folder), lists
the share of samples spent in each function (inclusive), in the app's functions, and
where the leaves are (self time).
Sampling costs CPU on a machine this small: a profiled run's figures are not the
benchmark's figures, and ``bench.run`` writes them apart (``profiled.*``).
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from . import services

PROFILES = Path(__file__).resolve().parent / "results" / "profiles"
ENABLED = False
RATE = 200


def py_spy() -> str | None:
    return shutil.which("py-spy") or (
        str(services.BIN / "py-spy") if (services.BIN / "py-spy").exists() else None
    )


@contextlib.contextmanager
def sampling(name: str, pids: list[int]) -> Iterator[None]:
    """Sample ``pids`` while the block runs (nothing when profiling is off)."""
    binary = py_spy()
    if not ENABLED or not binary or not pids:
        yield
        return
    PROFILES.mkdir(parents=True, exist_ok=True)
    services.LOG_DIR.mkdir(parents=True, exist_ok=True)
    raw = [services.LOG_DIR / f"profile-{name}-{pid}.raw" for pid in pids]
    spies = [
        subprocess.Popen(
            [binary, "record", "-p", str(pid), "-r", str(RATE), "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for pid, out in zip(pids, raw, strict=True)
    ]
    try:
        yield
    finally:
        for spy in spies:
            with contextlib.suppress(ProcessLookupError):
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                services.stop_group(spy)
        summary = summarise([path for path in raw if path.exists()])
        (PROFILES / f"{name}.txt").write_text(summary)
        services.log(f"profile of {name}: {PROFILES / (name + '.txt')}")


def _name(frame: str) -> str:
    return re.sub(r":\d+\)$", ")", frame)


def summarise(paths: list[Path], top: int = 45) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_name(frame) for frame in stack.split(";")]
            for frame in set(frames):
                inclusive[frame] += n
            leaves[frames[-1]] += n
    if not total:
        return "no samples\n"

    def share(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    lines = [f"{total} samples ({RATE}/s per process, {len(paths)} processes)", ""]
    lines.append("== the app's functions, inclusive")
    app = [(f, n) for f, n in inclusive.most_common() if "notify_tracking/" in f]
    lines += [f"{share(n)}  {f}" for f, n in app[:top]]
    lines += ["", "== every function, inclusive"]
    lines += [f"{share(n)}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "== self time (leaves)"]
    lines += [f"{share(n)}  {f}" for f, n in leaves.most_common(25)]
    return "\n".join(lines) + "\n"
