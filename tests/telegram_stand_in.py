"""Answers of the Bot API's sendMessage, for the stand-ins that play Telegram in tests."""

from __future__ import annotations

import json

from werkzeug import Response


def telegram_answer(*, message_id: int = 0, retry_after: int | None = None) -> Response:
    """``ok: true`` with ``message_id``, or with ``retry_after`` Telegram's 429 (flood control)."""
    if retry_after is None:
        body: dict = {"ok": True, "result": {"message_id": message_id}}
        return Response(json.dumps(body), content_type="application/json")
    body = {
        "ok": False,
        "error_code": 429,
        "description": f"Too Many Requests: retry after {retry_after}",
        "parameters": {"retry_after": retry_after},
    }
    return Response(json.dumps(body), status=429, content_type="application/json")
