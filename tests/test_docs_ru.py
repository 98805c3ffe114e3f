"""The Russian documentation (docs/ru) cannot drift from the English pages.

`mkdocs build --strict` already checks that every link and anchor resolves and that every
page is in the nav. What it cannot know is checked here: each Russian page translates an
English one, a Russian page links to the Russian version of a page when there is one, and
every English page is either translated or named as English-only on docs/ru/index.md,
and each Russian heading keeps the anchor of its English heading.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
RU = DOCS / "ru"
# A relative link to an English page from docs/ru: ](../name.md) or ](../name.md#anchor).
ENGLISH_LINK = re.compile(r"\]\(\.\./([\w-]+)\.md(#[\w-]*)?\)")


def test_every_russian_page_translates_an_english_page():
    orphans = [p.name for p in RU.glob("*.md") if not (DOCS / p.name).exists()]
    assert not orphans


def test_russian_pages_link_to_russian_pages_where_they_exist():
    wrong = [
        f"{page.name}: ../{name}.md"
        for page in sorted(RU.glob("*.md"))
        for name, _anchor in ENGLISH_LINK.findall(page.read_text(encoding="utf-8"))
        if (RU / f"{name}.md").exists() and name != page.stem  # "English version" link
    ]
    assert not wrong, "link to the Russian page instead (drop the ../)"


def test_every_english_page_is_translated_or_named_as_english_only():
    index = (RU / "index.md").read_text(encoding="utf-8")
    missing = [
        p.name
        for p in sorted(DOCS.glob("*.md"))
        if not (RU / p.name).exists() and f"](../{p.name}" not in index
    ]
    assert not missing, "translate them, or list them on docs/ru/index.md as English-only"


def _slug(heading: str) -> str:
    """Python-Markdown's default heading id (the toc extension's slugify)."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def _heading_ids(text: str) -> list[str]:
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    ids = []
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE):
        explicit = re.search(r"\{#([\w-]+)\}\s*$", heading)
        ids.append(explicit[1] if explicit else _slug(heading))
    return ids


def test_russian_headings_keep_the_english_anchors():
    """`page.md#anchor` works in both languages, and a renamed English heading shows."""
    wrong = []
    for page in sorted(RU.glob("*.md")):
        english = set(_heading_ids((DOCS / page.name).read_text(encoding="utf-8")))
        wrong += [
            f"{page.name}#{anchor}"
            for anchor in _heading_ids(page.read_text(encoding="utf-8"))
            if anchor not in english
        ]
    assert not wrong, "give each Russian heading {#id} with the English heading's anchor"
