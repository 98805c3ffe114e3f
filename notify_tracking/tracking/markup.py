"""Finding links and the end of the body in an HTML document, without changing it.

The stdlib's :class:`html.parser.HTMLParser` finds the tags (so links inside comments,
``<script>`` or attribute values are never mistaken for tags); we only note where
each one starts in the source, so that a caller can replace exactly the characters
of one attribute value and leave every other byte of the document as it was.

Links inside HTML comments, Outlook's conditional comments (``<!--[if mso]>``)
included, are not links to the parser, and so are left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

# One attribute of a start tag, as the tag's own text writes it.
_ATTRIBUTE = re.compile(r"""(?P<name>[^\s/>"'=]+)(?:\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^\s>]+))?""")
_TAG_NAME = re.compile(r"<[^\s/>]+")


@dataclass(frozen=True)
class Link:
    """An ``<a href>`` of the document: its target and where its value sits in the source."""

    href: str  # the value as a browser reads it (entities decoded)
    start: int  # offset of the first character of the written value (inside quotes)
    end: int  # offset just past it
    attributes: dict[str, str | None]


@dataclass(frozen=True)
class Document:
    links: list[Link]
    #: Where content appended at the end of the body goes: before the last
    #: ``</body>``, else before the last ``</html>``, else at the very end.
    body_end: int


class _Scanner(HTMLParser):
    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self._source = source
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", source)]
        self.links: list[Link] = []
        self.body_close: int | None = None
        self.html_close: int | None = None

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        attributes: dict[str, str | None] = {}
        for name, value in attrs:
            attributes.setdefault(name, value)  # like a browser: the first one wins
        href = attributes.get("href")
        if href is None:
            return
        span = _href_span(self.get_starttag_text() or "")
        if span is not None:
            offset = self._offset()
            self.links.append(Link(href, offset + span[0], offset + span[1], attributes))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_close = self._offset()
        elif tag == "html":
            self.html_close = self._offset()


def _href_span(tag_text: str) -> tuple[int, int] | None:
    """Where the value of the first ``href`` sits in a start tag's text (quotes excluded)."""
    name = _TAG_NAME.match(tag_text)
    position = name.end() if name else 0
    for match in _ATTRIBUTE.finditer(tag_text, position):
        if match["name"].lower() != "href":
            continue
        if match["value"] is None:
            return None
        start, end = match.span("value")
        if tag_text[start] in "\"'":
            start, end = start + 1, end - 1
        return start, end
    return None


def scan(source: str) -> Document:
    """The links of ``source`` and where the end of its body is."""
    scanner = _Scanner(source)
    scanner.feed(source)
    scanner.close()
    if scanner.body_close is not None:
        body_end = scanner.body_close
    elif scanner.html_close is not None:
        body_end = scanner.html_close
    else:
        body_end = len(source)
    return Document(scanner.links, body_end)


def replace_spans(source: str, replacements: list[tuple[int, int, str]]) -> str:
    """``source`` with each ``(start, end, text)`` span replaced; spans must not overlap."""
    pieces = []
    position = 0
    for start, end, text in sorted(replacements):
        pieces.append(source[position:start])
        pieces.append(text)
        position = end
    pieces.append(source[position:])
    return "".join(pieces)


def insert_at(source: str, offset: int, text: str) -> str:
    """``source`` with ``text`` inserted at ``offset``."""
    return source[:offset] + text + source[offset:]
