"""The demo's and the suite's filesystem broker hands a reader whole messages only.

kombu's own filesystem transport creates a message's file before writing it, so a
reader polling the folder at that moment takes an empty file and fails to decode it
(kombu issue #1551); a Celery worker then stops. These tests read while another
thread writes, as a worker does while a process enqueues.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection
from kombu.exceptions import ChannelError

from example_project.filesystem_broker import Transport

MESSAGES = 200
BODY = "x" * 200_000  # large enough that writing one takes a while


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[object]:
    options = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "processed_folder": str(tmp_path / "processed"),
        "control_folder": str(tmp_path / "control"),
        "store_processed": False,
    }
    (tmp_path / "processed").mkdir()
    with Connection("filesystem://", transport=Transport, transport_options=options) as conn:
        yield conn.default_channel


def test_a_reader_polling_while_messages_are_written_gets_each_one_whole(channel) -> None:
    def write_all() -> None:
        for number in range(MESSAGES):
            channel._put("jobs", {"number": number, "body": BODY})

    writer = threading.Thread(target=write_all)
    writer.start()
    received = []
    deadline = time.monotonic() + 60
    while len(received) < MESSAGES and time.monotonic() < deadline:
        with contextlib.suppress(Empty):
            received.append(channel._get("jobs"))
    writer.join()

    # Messages written in the same millisecond may be read in either order.
    assert sorted(message["number"] for message in received) == list(range(MESSAGES))
    assert all(message["body"] == BODY for message in received)


def test_nothing_half_written_is_left_in_the_folder(channel, tmp_path: Path) -> None:
    channel._put("jobs", {"number": 1})

    names = [name for name in os.listdir(tmp_path) if (tmp_path / name).is_file()]
    assert len(names) == 1
    assert names[0].endswith(".jobs.msg")
    assert channel._get("jobs") == {"number": 1}
    with pytest.raises(Empty):
        channel._get("jobs")


def test_a_folder_that_cannot_be_written_gives_a_channel_error(channel, tmp_path: Path) -> None:
    channel.data_folder_out = str(tmp_path / "missing")

    with pytest.raises(ChannelError, match="Cannot add a message"):
        channel._put("jobs", {"number": 1})


def test_the_suite_runs_on_this_transport_unless_given_a_broker_url(settings) -> None:
    from tests.celery_app import app

    with app.connection_for_write() as connection:
        # NOTIFY_TRACKING_TEST_BROKER_URL (CI's Redis and RabbitMQ runs) names a server.
        assert isinstance(connection.transport, Transport) == (not settings.BROKER_URL)
