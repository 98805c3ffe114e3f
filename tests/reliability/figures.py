"""Measured figures of the reliability tests, for docs/guarantees.md.

Each is printed as a ``[reliability figures]`` line, even when the test passes, and
appended as a JSON line to ``$NOTIFY_TRACKING_TEST_FIGURES`` when it is set
(scripts/ci-reliability.sh collects them).
"""

from __future__ import annotations

import json
import os


def emit(capsys, test: str, name: str, line: str, **values: object) -> None:
    with capsys.disabled():
        print(f"\n[reliability figures] {name}: {line}")
    path = os.environ.get("NOTIFY_TRACKING_TEST_FIGURES")
    if path:
        record = {"test": test, "name": name, "line": line, **values}
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=str) + "\n")
