"""PNG status badges, for places that show neither SVG nor scripts (email digests).

An email client fetches images without the reader's session, so a PNG badge URL
carries its own permission: a signed token naming the target and the language of
the label (:func:`signed_png_url`). It shows only the state and the label, never a
recipient. Images are rendered once per (state, label) and kept in an in-process
LRU cache: the key holds nothing about the viewer.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

from django.core import signing
from django.db import models
from django.http import HttpRequest
from django.urls import reverse
from django.utils import translation
from PIL import Image, ImageDraw, ImageFont

from .conf import absolute_url, get_setting
from .targets import key_of, parse_key

SALT = "notify_tracking.badge-png"
HEIGHT = 20
ICON_WIDTH = 20
PADDING = 6
FONT_SIZE = 11
TEXT_COLOUR = (31, 41, 55)
LABEL_BACKGROUND = (243, 244, 246)
STATE_COLOURS = {
    None: (156, 163, 175),
    "queued": (107, 114, 128),
    "sent": (59, 130, 246),
    "delivered": (37, 99, 235),
    "read": (22, 163, 74),
    "error": (220, 38, 38),
}


# --- signed URLs ----------------------------------------------------------------------


def png_token(target: models.Model, language: str | None = None) -> str:
    """A signed token naming ``target`` and the language of its label."""
    payload = {"t": key_of(target), "l": language or translation.get_language()}
    return signing.dumps(payload, salt=SALT, compress=True)


def read_png_token(token: str) -> tuple[type[models.Model], Any, str | None]:
    """``(model, pk, language)`` of a token; ``signing.BadSignature`` or BadTarget if invalid."""
    payload = signing.loads(token, salt=SALT)
    model, pk = parse_key(payload["t"])
    return model, pk, payload.get("l")


def signed_png_url(
    target: models.Model, *, request: HttpRequest | None = None, language: str | None = None
) -> str:
    """The URL of ``target``'s PNG badge: absolute with ``BASE_URL`` or a request."""
    path = reverse(
        "notify_tracking:status-badge-png", kwargs={"token": png_token(target, language)}
    )
    url = absolute_url(path)
    if url is not None:
        return url
    return request.build_absolute_uri(path) if request is not None else path


# --- rendering ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def badge_font(path: str | None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The font of badge labels: ``BADGE_FONT``, else DejaVu Sans if the system has it
    (it covers Cyrillic, Greek...), else Pillow's built-in font (Latin only)."""
    for candidate in (path, "DejaVuSans.ttf"):
        if candidate:
            try:
                return ImageFont.truetype(candidate, FONT_SIZE)
            except OSError:
                continue
    return ImageFont.load_default(size=FONT_SIZE)


@lru_cache(maxsize=256)
def render_png(state: str | None, label: str) -> bytes:
    """A badge: a coloured square with the state's mark, then the label. Cached."""
    font = badge_font(get_setting("BADGE_FONT"))
    text_width = int(font.getlength(label))
    image = Image.new("RGB", (ICON_WIDTH + text_width + 2 * PADDING, HEIGHT), LABEL_BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, ICON_WIDTH - 1, HEIGHT - 1), fill=STATE_COLOURS[state])
    _draw_mark(draw, state)
    draw.text((ICON_WIDTH + PADDING, HEIGHT // 2), label, font=font, fill=TEXT_COLOUR, anchor="lm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _draw_mark(draw: ImageDraw.ImageDraw, state: str | None) -> None:
    white = (255, 255, 255)
    if state == "queued" or state is None:
        draw.ellipse((4, 4, 15, 15), outline=white, width=2)
        draw.line((10, 7, 10, 10, 12, 12), fill=white, width=1)
    elif state == "sent":
        draw.line((5, 10, 8, 13, 15, 6), fill=white, width=2)
    elif state in ("delivered", "read"):
        draw.line((2, 10, 5, 13, 11, 6), fill=white, width=2)
        draw.line((8, 12, 9, 13, 17, 6), fill=white, width=2)
    elif state == "error":
        draw.line((10, 4, 10, 11), fill=white, width=2)
        draw.rectangle((9, 14, 10, 15), fill=white)
