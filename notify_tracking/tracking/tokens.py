"""Signed tokens of the tracking URLs (pixel, click, download).

A token names a delivery by its random UUID (``Delivery.token``: 122 random bits,
never an email address or a row id) and is signed with HMAC-SHA256 keyed by
``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` are accepted while you rotate it), with one
salt per purpose: a pixel token cannot be replayed as a click token. Checking a token
costs no query: a forged, tampered or truncated one is refused before the database
is asked anything.

A *group* token (``group=True``) stands for every delivery of the delivery's
notification on its channel: it is used when one email went to all recipients at
once (``ONE_EMAIL_PER_NOTIFICATION``).

Token shapes (``.`` separates the payload from its signature):

- open: ``<uuid hex>[g].<signature>``
- click: ``<base64 of the JSON [uuid hex, group, url]>.<signature>``
- download: ``<uuid hex>[g]-<attachment id>.<signature>``
"""

from __future__ import annotations

import re
import uuid
import zlib
from dataclasses import dataclass

from django.core import signing

#: Longest token we verify; anything longer is refused before any hashing.
MAX_TOKEN_LENGTH = 4096

_SEP = "."
_GROUP = "g"
_OPEN_SALT = "notify_tracking.tracking.open"
_CLICK_SALT = "notify_tracking.tracking.click"
_DOWNLOAD_SALT = "notify_tracking.tracking.download"
_OPEN_PAYLOAD = re.compile(r"(?P<hex>[0-9a-f]{32})(?P<group>g?)")
_DOWNLOAD_PAYLOAD = re.compile(
    r"(?P<hex>[0-9a-f]{32})(?P<group>g?)-(?P<attachment>[1-9][0-9]{0,18})"
)


class InvalidToken(Exception):
    """A token that we did not issue, or that was changed or cut."""


@dataclass(frozen=True)
class OpenToken:
    delivery: uuid.UUID
    group: bool = False


@dataclass(frozen=True)
class ClickToken:
    delivery: uuid.UUID
    url: str
    group: bool = False


@dataclass(frozen=True)
class DownloadToken:
    delivery: uuid.UUID
    attachment_id: int
    group: bool = False


def _signer(salt: str) -> signing.Signer:
    return signing.Signer(salt=salt, sep=_SEP)


def _check_length(token: str) -> None:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("missing or oversized token")


def _unsign(token: str, salt: str) -> str:
    _check_length(token)
    try:
        return _signer(salt).unsign(token)
    except signing.BadSignature as error:
        raise InvalidToken("bad signature") from error


def _flag(group: bool) -> str:
    return _GROUP if group else ""


def sign_open(delivery_token: uuid.UUID, *, group: bool = False) -> str:
    """The token of the open pixel of one delivery (or of its whole group)."""
    return _signer(_OPEN_SALT).sign(f"{delivery_token.hex}{_flag(group)}")


def read_open(token: str) -> OpenToken:
    """The content of a pixel token; raises :class:`InvalidToken` for a bad one."""
    match = _OPEN_PAYLOAD.fullmatch(_unsign(token, _OPEN_SALT))
    if match is None:
        raise InvalidToken("malformed open token")
    return OpenToken(uuid.UUID(hex=match["hex"]), bool(match["group"]))


def sign_click(delivery_token: uuid.UUID, url: str, *, group: bool = False) -> str:
    """The token of a tracked link: it signs both the delivery and the target URL."""
    return _signer(_CLICK_SALT).sign_object([delivery_token.hex, group, url], compress=True)


def read_click(token: str) -> ClickToken:
    """The content of a click token; raises :class:`InvalidToken` for a bad one."""
    _check_length(token)
    try:
        # The signature is checked before anything is decoded or decompressed.
        value = _signer(_CLICK_SALT).unsign_object(token)
    except signing.BadSignature as error:
        raise InvalidToken("bad signature") from error
    except (ValueError, UnicodeDecodeError, zlib.error) as error:
        raise InvalidToken("malformed click token") from error
    if not (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[1], bool)
        and isinstance(value[2], str)
    ):
        raise InvalidToken("malformed click token")
    try:
        delivery = uuid.UUID(hex=value[0])
    except ValueError as error:
        raise InvalidToken("malformed click token") from error
    return ClickToken(delivery, value[2], value[1])


def sign_download(delivery_token: uuid.UUID, attachment_id: int, *, group: bool = False) -> str:
    """The token of a tracked download of one attachment."""
    payload = f"{delivery_token.hex}{_flag(group)}-{int(attachment_id)}"
    return _signer(_DOWNLOAD_SALT).sign(payload)


def read_download(token: str) -> DownloadToken:
    """The content of a download token; raises :class:`InvalidToken` for a bad one."""
    match = _DOWNLOAD_PAYLOAD.fullmatch(_unsign(token, _DOWNLOAD_SALT))
    if match is None:
        raise InvalidToken("malformed download token")
    return DownloadToken(
        uuid.UUID(hex=match["hex"]), int(match["attachment"]), bool(match["group"])
    )
