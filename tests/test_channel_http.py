"""The HTTP client shared by the Telegram, Slack and webhook channels."""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import socket
import threading
import time
import tracemalloc

import pytest
from werkzeug import Response

from notify_tracking.channels.http import MAX_ANSWER_BYTES, Answer, HttpClient, HttpRequest
from notify_tracking.exceptions import TransientChannelError


def post(url, timeout=2.0):
    client = HttpClient("Service", timeout)
    client.open()
    try:
        return client.post(HttpRequest(url, b"{}", {"Content-Type": "application/json"}))
    finally:
        client.close()


@contextlib.contextmanager
def raw_server(head: bytes, body_chunk: bytes, count: int, pause: float = 0.0):
    """Answers every request with ``head``, then ``count`` times ``body_chunk``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(head)
                for _ in range(count):
                    time.sleep(pause)
                    connection.sendall(body_chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        listener.close()
        thread.join(timeout=15)


def test_a_10_mb_streamed_answer_is_read_no_further_than_the_cap():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    with raw_server(head, b"[" * 65536, 160) as url:  # 10 MiB, no length declared
        tracemalloc.start()
        try:
            answer = post(url)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert (answer.status, answer.complete, answer.json()) == (200, False, None)
    assert len(answer.body) <= MAX_ANSWER_BYTES
    assert peak < 4 * MAX_ANSWER_BYTES  # not 10 MiB


def test_a_chunked_10_mb_answer_is_cut_too(httpserver):
    def endless(request):
        return Response(b"x" * 65536 for _ in range(160))

    httpserver.expect_request("/big").respond_with_handler(endless)
    answer = post(httpserver.url_for("/big"))
    assert (answer.status, answer.complete) == (200, False)
    assert MAX_ANSWER_BYTES - 65536 <= len(answer.body) <= MAX_ANSWER_BYTES


def test_a_declared_huge_answer_is_not_downloaded(httpserver):
    httpserver.expect_request("/big").respond_with_data(b"y" * (10 * 1024 * 1024))
    answer = post(httpserver.url_for("/big"))
    assert (answer.complete, answer.body) == (False, b"")
    assert answer.describe() == "HTTP 200 with an answer larger than 1048576 bytes"


def test_a_server_that_trickles_bytes_still_times_out():
    """Each byte comes well within the read timeout; the whole exchange does not."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"
    with raw_server(head, b"x", 50, pause=0.2) as url:
        started = time.monotonic()
        with pytest.raises(TransientChannelError, match=r"^Service did not answer within 1.0 s$"):
            post(url, timeout=1.0)
        assert time.monotonic() - started < 2.0


def test_a_connection_that_breaks_mid_answer():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
    with raw_server(head, b"x" * 100, 1) as url, pytest.raises(TransientChannelError) as error:
        post(url)
    assert error.value.reason == "Service: the connection broke while the answer was arriving"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("5", 5.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), ("", None)],
)
def test_retry_after_in_seconds(header, seconds):
    assert Answer(429, {"Retry-After": header}, b"").retry_after() == seconds


def test_retry_after_as_an_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert Answer(503, {"Retry-After": when}, b"").retry_after() == pytest.approx(30, abs=2)


def test_describe_keeps_one_short_line():
    answer = Answer(502, {}, b"<html>\n  bad\n gateway " + b"z" * 500 + b"</html>")
    assert answer.describe().startswith("HTTP 502: <html> bad gateway zzz")
    assert len(answer.describe()) < 220


def test_nested_batches_share_one_session_per_thread(httpserver):
    httpserver.expect_request("/ok").respond_with_data("fine")
    client = HttpClient("Service", 2)
    client.open()
    client.open()  # a retry sent from inside a batch (eager Celery) opens again
    client.close()
    assert client.post(HttpRequest(httpserver.url_for("/ok"), b"")).body == b"fine"
    client.close()
    assert client._local.session is None


def test_a_compressed_answer_is_not_inflated():
    """We ask for no compression; a server that compresses anyway is not decompressed,
    so a small gzip "bomb" stays small."""
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))  # 50 MiB of zeros, ~50 KiB compressed
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
    with raw_server(head, bomb, 1) as url:
        answer = post(url)
    assert (answer.complete, len(answer.body)) == (True, len(bomb))
    assert answer.json() is None
