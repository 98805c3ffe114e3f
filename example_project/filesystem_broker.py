"""kombu's filesystem broker, with each message written whole before a worker can see it.

The demo and the test suite run Celery on kombu's filesystem transport so that they
need no broker server. That transport creates a message's file under its final name
and then writes it; a worker that lists the folder in between moves the empty file
away, fails to decode it, and stops ("Unrecoverable error: JSONDecodeError", kombu
issue #1551). This happened in CI while a test enqueued tasks as fast as it could.

Here a message is written to a hidden file in the same folder and renamed to its
final name once complete. A rename within one folder is atomic, so a worker sees
either no message or all of it. kombu's reader skips the hidden file: it takes only
names of the form ``<stamp>.<queue>.msg``.

Settings name this class with ``CELERY_BROKER_TRANSPORT`` next to
``CELERY_BROKER_URL = "filesystem://"``, and only then: a transport named so overrides
the scheme of any broker URL, a ``redis://`` one included. Message files are created
readable by their owner only (``mkstemp``), so the web server and the worker must run
as the same user. A host project running a real broker needs none of this.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # The name kombu's own _put gives, so that messages keep kombu's order.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        try:
            descriptor, partial = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
        except OSError as exc:
            raise ChannelError(f"Cannot add a message to {folder!r}") from exc
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(dumps(payload))
            os.replace(partial, os.path.join(folder, name))
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            if isinstance(exc, OSError):
                raise ChannelError(f"Cannot add a message to {folder!r}") from exc
            raise


class Transport(filesystem.Transport):
    Channel = Channel
