"""Text helpers shared by the messenger channels: the target's link, and fitting a
message into a provider's length limit without cutting an escape sequence in half."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext as _

from ..conf import absolute_url
from ..exceptions import ChannelError

if TYPE_CHECKING:
    from ..models import Notification

ELLIPSIS = "…"


def target_url(notification: Notification) -> str | None:
    """The absolute URL of the notification's target, when it has one (see
    :func:`url_of`)."""
    return url_of(notification.target)


def url_of(target: Any) -> str | None:
    """``target.get_absolute_url()``, made absolute with ``NOTIFY_TRACKING["BASE_URL"]``
    when it is a path; None when the target (gone: None) has no such method or there
    is no base."""
    get_url = getattr(target, "get_absolute_url", None)
    if not callable(get_url):
        return None
    url = str(get_url())
    if url.startswith(("http://", "https://")):
        return url
    return absolute_url(url)


def text_to_send(notification: Notification) -> str:
    """The plain-text body, or a :class:`ChannelError` when there is nothing to send."""
    text = (notification.text or "").strip()
    if not text:
        raise ChannelError(_("nothing to send: the notification's text is empty"))
    return text


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, the way Telegram and Slack count characters."""
    return len(text.encode("utf-16-le")) // 2


def fit(
    text: str,
    budget: int,
    escape: Callable[[str], str],
    measure: Callable[[str], int] = utf16_length,
) -> tuple[str, bool]:
    """``escape(text)``, cut so that it fits in ``budget``; and whether it was cut.

    The raw text is cut, then escaped, so an escape sequence is never cut in half;
    a cut text ends with an ellipsis, which counts in the budget.
    """
    escaped = escape(text)
    if measure(escaped) <= budget:
        return escaped, False
    room = budget - measure(ELLIPSIS)
    cut = text[: max(room, 0)]
    while cut and measure(escape(cut)) > room:
        excess = measure(escape(cut)) - room
        cut = cut[: len(cut) - max(1, excess // 6)]
    return escape(cut.rstrip()) + ELLIPSIS, True
