"""The demo's webhook receiver: the system on the other end of the webhook channel.

A small HTTP server on 127.0.0.1, in a thread of ``run_demo.py`` (started before the
worker, stopped after it). It does what docs/channels-webhook.md asks of a receiver:

- verifies ``X-Notify-Signature`` against ``X-Notify-Timestamp`` and the raw body,
  and refuses a request that is unsigned, badly signed or older than
  :data:`TOLERANCE` seconds with ``401``;
- keeps each document it takes as one JSON line in the inbox file (the raw body,
  its timestamp and signature, and what it answered), shown at ``/webhook-inbox/``;
- answers ``{"id": ...}``: the channel stores that id as the delivery's message id;
- takes a retry of a delivery it already has (same ``delivery``) without keeping it
  twice, and answers the same id.

Refused requests are kept too (without their body), so the inbox page shows them.
It has no dependency on Django: it needs the secret and the inbox's path only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PATH = "/hook/"
TOLERANCE = 300  # seconds: how old a request may be
MAX_BODY = 1024 * 1024  # bytes; the channel's documents are far smaller


def verify(secret: str, timestamp: str, signature: str, body: bytes) -> bool:
    """True when ``body`` was signed with ``secret`` less than TOLERANCE seconds ago.

    The function of docs/channels-webhook.md ("Verifying it"), as a receiver runs it.
    """
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE:
        return False
    signed = timestamp.encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def signature_matches(secret: str, timestamp: str, signature: str, body: bytes) -> bool:
    """The signature check alone, without the age limit: for checking a stored entry."""
    signed = timestamp.encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def read_inbox(path: Path | str | None) -> Iterator[dict[str, Any]]:
    """The entries of an inbox file, oldest first (a line that is not JSON is skipped)."""
    if not path:
        return
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry


class WebhookReceiver:
    """Bind on construction (so the port is known before the worker starts), serve on start()."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self.server = ThreadingHTTPServer((host, port), _Handler)
        self.server.daemon_threads = True
        self.server.receiver = self
        self.host = host
        self.port = self.server.server_address[1]
        self.secret = ""
        self.inbox: Path | None = None
        self.lock = threading.RLock()
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PATH}"

    def start(self, secret: str, inbox: Path | str) -> WebhookReceiver:
        if not secret:
            raise ValueError("the webhook receiver needs the channel's secret")
        self.secret, self.inbox = secret, Path(inbox)
        self.inbox.parent.mkdir(parents=True, exist_ok=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="webhook-receiver", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(timeout=10)
            self.thread = None
        self.server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- handling one request (called in the server's threads) -------------------------

    def receive(self, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer for one POST of ``body``."""
        timestamp = headers.get("X-Notify-Timestamp", "")
        signature = headers.get("X-Notify-Signature", "")
        entry = {
            "received_at": datetime.now(timezone.utc).isoformat(),
            "delivery": headers.get("X-Notify-Delivery", ""),
            "timestamp": timestamp,
            "signature": signature,
        }
        if not verify(self.secret, timestamp, signature, body):
            why = "no signature" if not signature else "bad or expired signature"
            self._append({**entry, "accepted": False, "status": 401, "reason": why})
            return 401, {"error": why}
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict) or not document.get("delivery"):
            self._append({**entry, "accepted": False, "status": 400, "reason": "not a document"})
            return 400, {"error": "not a notification document"}
        with self.lock:
            known = self._known_id(str(document["delivery"]))
            if known:
                return 200, {"id": known}  # a retry we already have
            answer_id = f"inbox-{uuid.uuid4().hex[:12]}"
            self._append(
                {
                    **entry,
                    "accepted": True,
                    "status": 200,
                    "id": answer_id,
                    "body": body.decode("utf-8"),
                    "document": document,
                }
            )
        return 200, {"id": answer_id}

    def _known_id(self, delivery: str) -> str:
        for entry in read_inbox(self.inbox):
            if entry.get("accepted") and entry.get("document", {}).get("delivery") == delivery:
                return entry.get("id", "")
        return ""

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self.lock, self.inbox.open("a", encoding="utf-8") as file:
            file.write(line)


class _Handler(BaseHTTPRequestHandler):
    server_version = "DemoWebhookReceiver/1"

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != PATH:
            return self._answer(404, {"error": "not found"})
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            return self._answer(411, {"error": "Content-Length required"})
        if int(length) > MAX_BODY:
            return self._answer(413, {"error": "too large"})
        body = self.rfile.read(int(length))
        receiver: WebhookReceiver = self.server.receiver  # type: ignore[attr-defined]
        status, answer = receiver.receive(self.headers, body)
        return self._answer(status, answer)

    def do_GET(self) -> None:
        self._answer(405, {"error": "POST only"})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the inbox is the log; keep the demo's terminal quiet
