"""A fake Postmark: ``POST /email`` on 127.0.0.1, answering each recipient by a rule.

Used by the provider fault tests (with a worker: tests/reliability/) and by the
in-process tests of a provider's errors (tests/test_reliability_sending.py). anymail's
real Postmark backend talks to it when ``ANYMAIL["POSTMARK_API_URL"]`` is its ``url``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: A rule answers one attempt at one recipient: given the attempt number (0 for the
#: first), it returns (seconds to wait before answering, HTTP status, JSON body).
ProviderRule = Callable[[int], "tuple[float, int, dict]"]


def accepted(to: str) -> dict:
    return {
        "To": to,
        "SubmittedAt": "2026-11-01T10:00:00Z",
        "MessageID": str(uuid.uuid4()),
        "ErrorCode": 0,
        "Message": "OK",
    }


@dataclass
class FakePostmark:
    """Postmark's ``POST /email`` on 127.0.0.1, answering each recipient by its rule."""

    rules: dict[str, ProviderRule] = field(default_factory=dict)
    attempts: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def answer(self, payload: dict) -> tuple[float, int, dict]:
        to = str(payload.get("To", ""))
        with self.lock:
            times = self.attempts.setdefault(to, [])
            attempt = len(times)
            times.append(time.monotonic())
        rule = self.rules.get(to)
        return rule(attempt) if rule else (0.0, 200, accepted(to))


def _handler_for(fake: FakePostmark) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                payload = {}
            if self.path != "/email" or self.headers.get("X-Postmark-Server-Token") is None:
                delay, status, body = 0.0, 404, {"ErrorCode": 404, "Message": "not found"}
            else:
                delay, status, body = fake.answer(payload)
            time.sleep(delay)
            data = json.dumps(body).encode()
            with contextlib.suppress(OSError):  # the client gave up waiting: fine
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def running() -> Iterator[FakePostmark]:
    """A fake Postmark serving on a free port until the block ends."""
    fake = FakePostmark()
    fake.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    fake.server.daemon_threads = True
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
