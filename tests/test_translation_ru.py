# ruff: noqa: RUF001  (Russian text: its Cyrillic letters are meant, not look-alikes)
"""The Russian translation: what a Russian-speaking user really sees, and a complete catalog.

The rendering tests go through the app's own paths (notify(), record_event(), summary(),
the badge template tag, the read-notice email templates) with ``translation.override("ru")``.
The catalog tests read the shipped .po and .mo files without any extra dependency: no
untranslated or fuzzy entry, placeholders and HTML tags kept, and a .mo that matches
its .po (so a wheel works without gettext installed).
"""

from __future__ import annotations

import ast
import datetime as dt
import gettext
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import AnonymousUser
from django.template import Context, Template
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.utils import translation

from notify_tracking import record_event, summary
from notify_tracking import status as st
from notify_tracking.models import STATUS_LABELS
from tests.status_factories import notify_with_statuses

ROOT = Path(__file__).resolve().parent.parent
CATALOGS = [
    ROOT / "notify_tracking" / "locale" / "ru" / "LC_MESSAGES" / "django.po",
    ROOT / "example_project" / "locale" / "ru" / "LC_MESSAGES" / "django.po",
]
RUSSIAN_PLURALS = (
    "nplurals=3; plural=(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && "
    "(n%100<10 || n%100>=20) ? 1 : 2);"
)
BADGE = "{% load notify_tracking %}{% delivery_badge target %}"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("boss", "boss@corp.example", is_staff=True)


def render_badge(target, user) -> str:
    request = RequestFactory().get("/")
    request.user = user
    return Template(BADGE).render(Context({"request": request, "target": target}))


# --- what users see ---------------------------------------------------------------------


def test_status_labels_are_russian():
    with translation.override("ru"):
        labels = {status: str(label) for status, label in STATUS_LABELS.items()}

    assert labels == {
        st.QUEUED: "В очереди",
        st.SENT: "Отправлено",
        st.DELIVERED: "Доставлено",
        st.OPENED: "Прочитано",
        st.CLICKED: "Переход по ссылке",
        st.DEFERRED: "Задерживается",
        st.FAILED: "Сбой",
        st.REJECTED: "Отклонено",
        st.BOUNCED: "Возвращено",
        st.COMPLAINED: "Помечено как спам",
    }
    # English stays English outside the override.
    assert str(STATUS_LABELS[st.OPENED]) == "Read"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("statuses", "label"),
    [
        ([st.OPENED, st.DELIVERED, st.SENT], "Прочитал 1 из 3"),
        ([st.OPENED, st.CLICKED, st.DELIVERED], "Прочитали 2 из 3"),
        ([st.OPENED] * 5 + [st.DELIVERED], "Прочитали 5 из 6"),
        ([st.OPENED, st.OPENED, st.OPENED], "Прочитали все"),
        ([st.DELIVERED, st.DELIVERED, st.SENT], "Доставлено 2 из 3"),
        ([st.DELIVERED, st.DELIVERED], "Доставлено всем"),
        ([st.SENT, st.QUEUED, st.QUEUED], "Отправлено 1 из 3"),
        ([st.OPENED], "Прочитано"),
        ([st.DEFERRED], "Задерживается"),
        ([st.FAILED, st.BOUNCED], "Ошибка"),
        ([st.OPENED, st.DELIVERED, st.BOUNCED], "Прочитал 1 из 3; ошибка у 1 из 3"),
        ([st.DELIVERED, st.FAILED, st.REJECTED], "Доставлено 1 из 3; ошибки у 2 из 3"),
    ],
)
def test_summary_label_is_russian_with_the_right_plural(task, statuses, label):
    notify_with_statuses(task, statuses)

    with translation.override("ru"):
        result = summary(task)

    assert result["label"] == label


@pytest.mark.django_db
def test_summary_of_a_target_never_notified(task):
    with translation.override("ru"):
        assert summary(task)["label"] == "Уведомлений не было"


@pytest.mark.django_db
def test_badge_is_russian(task, staff):
    notification = notify_with_statuses(task, [st.OPENED, st.OPENED, st.DELIVERED])
    reader = notification.deliveries.order_by("id").first()
    record_event(reader, st.OPENED, source="pixel")  # a second read by the same person
    record_event(reader, st.OPENED, source="pixel", is_machine=True)

    with translation.override("ru"):
        html = render_badge(task, staff)

    assert 'aria-label="Статус уведомления: Прочитали 2 из 3"' in html
    assert 'title="Прочитали 2 из 3"' in html
    assert 'aria-label="Закрыть"' in html
    assert "Не удалось обновить статус. Попробуйте позже." in html
    assert html.count(">Прочитано</span>") == 2  # the per-recipient status
    assert ">Доставлено</span>" in html
    assert "<dt>В очереди</dt>" in html and "<dt>Отправлено</dt>" in html
    assert "<dt>Последнее прочтение</dt>" in html
    assert "Открыто 2 раза" in html
    assert "1 открытие, возможно, автоматическое" in html
    assert "канал: Email" in html
    for english in ("Read by", "Queued", "Notification status", "Opened", "via Email"):
        assert english not in html


@pytest.mark.django_db
def test_badge_of_a_messenger_explains_what_it_cannot_report(task, staff, settings):
    from tests.status_factories import CHAT_CHANNELS

    settings.NOTIFY_TRACKING = {"CHANNELS": CHAT_CHANNELS}
    notify_with_statuses(task, [st.SENT], channel="chat")

    with translation.override("ru"):
        html = render_badge(task, staff)

    assert "Chat не сообщает о доставке и прочтении: «Отправлено»" in html


@pytest.mark.django_db
def test_badge_is_empty_for_an_anonymous_user_in_russian_too(task):
    notify_with_statuses(task, [st.OPENED])

    with translation.override("ru"):
        assert render_badge(task, AnonymousUser()).strip() == ""


@pytest.mark.parametrize(
    ("counter", "expected"),
    [
        (1, "Сводка прочтений: 1 новое прочтение"),
        (3, "Сводка прочтений: 3 новых прочтения"),
        (5, "Сводка прочтений: 5 новых прочтений"),
        (21, "Сводка прочтений: 21 новое прочтение"),
    ],
)
def test_read_digest_subject_plural(counter, expected):
    with translation.override("ru"):
        subject = render_to_string(
            "notify_tracking/email/read_digest_subject.txt", {"total": counter}
        )

    assert subject.strip() == expected


def test_read_notice_email_is_russian():
    item = SimpleNamespace(
        kind="opened",
        recipient="Анна",
        address="anna@example.com",
        read_at=dt.datetime(2024, 5, 3, 14, 30, tzinfo=dt.timezone.utc),
    )
    context = {"item": item, "title": "Задача обновлена", "target_url": "https://x.example/1"}

    with translation.override("ru"):
        subject = render_to_string("notify_tracking/email/read_notice_subject.txt", context)
        text = render_to_string("notify_tracking/email/read_notice.txt", context)
        html = render_to_string("notify_tracking/email/read_notice.html", context)

    assert subject.strip() == "Получатель Анна прочитал «Задача обновлена»"
    assert "Ваше уведомление «Задача обновлена» прочитано." in text
    assert "Получатель Анна <anna@example.com> прочитал его 3 мая 2024" in text
    assert "<strong>Анна</strong> &lt;anna@example.com&gt; прочитал его" in html
    assert ">Открыть</a>" in html


# --- the catalogs -----------------------------------------------------------------------


def _unquote(line: str) -> str:
    return ast.literal_eval(line)


def parse_po(path: Path) -> list[dict]:
    """The entries of a .po file: msgctxt, msgid, msgid_plural, msgstr[...] and flags."""
    entries, entry, key = [], None, None
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip():
            if entry is not None:
                entries.append(entry)
            entry, key = None, None
            continue
        if entry is None:
            entry = {"flags": set(), "msgstr": {}}
        if line.startswith("#,"):
            entry["flags"].update(flag.strip() for flag in line[2:].split(","))
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            if isinstance(key, int):
                entry["msgstr"][key] += _unquote(line)
            else:
                entry[key] += _unquote(line)
        else:
            keyword, _space, value = line.partition(" ")
            match = re.fullmatch(r"msgstr\[(\d)\]", keyword)
            key = int(match.group(1)) if match else keyword
            if keyword == "msgstr":
                key = 0
            if isinstance(key, int):
                entry["msgstr"][key] = _unquote(value)
            else:
                entry[key] = _unquote(value)
    return entries


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"%\(\w+\)[-#0 +]*\d*(?:\.\d+)?[sdrf]", text))


def _tags(text: str) -> list[str]:
    return sorted(re.findall(r"</?\w+[^>]*>|&\w+;", text))


@pytest.mark.parametrize("path", CATALOGS, ids=lambda path: path.parts[-5])
def test_catalog_is_complete_and_keeps_placeholders(path):
    entries = parse_po(path)
    header = entries[0]
    assert header["msgid"] == "" and "fuzzy" not in header["flags"]
    assert "Language: ru\n" in header["msgstr"][0]
    assert f"Plural-Forms: {RUSSIAN_PLURALS}\n" in header["msgstr"][0]

    messages = entries[1:]
    assert len(messages) > 50
    problems = []
    for entry in messages:
        msgid = entry["msgid"]
        if "fuzzy" in entry["flags"]:
            problems.append(f"fuzzy: {msgid!r}")
        expected_forms = 3 if "msgid_plural" in entry else 1
        forms = [entry["msgstr"].get(index, "") for index in range(expected_forms)]
        if len(entry["msgstr"]) != expected_forms or not all(forms):
            problems.append(f"untranslated: {msgid!r}")
            continue
        sources = msgid + entry.get("msgid_plural", "")
        for form in forms:
            if "msgid_plural" in entry:
                # Russian needs the number in every form, even where English says "once".
                ok = _placeholders(form) <= _placeholders(sources) and _placeholders(
                    entry["msgid_plural"]
                ) <= _placeholders(form)
            else:
                ok = _placeholders(form) == _placeholders(msgid)
            if not ok:
                problems.append(f"placeholders differ: {msgid!r} -> {form!r}")
            if _tags(form) != _tags(entry.get("msgid_plural", msgid)):
                problems.append(f"HTML differs: {msgid!r} -> {form!r}")
    assert problems == []


@pytest.mark.parametrize("path", CATALOGS, ids=lambda path: path.parts[-5])
def test_compiled_catalog_matches_its_po(path):
    """The committed .mo is the .po compiled: nobody forgot compilemessages."""
    with path.with_suffix(".mo").open("rb") as file:
        compiled = gettext.GNUTranslations(file)
    for entry in parse_po(path)[1:]:
        msgid = entry["msgid"]
        if "msgctxt" in entry:
            assert compiled.pgettext(entry["msgctxt"], msgid) == entry["msgstr"][0], msgid
        elif "msgid_plural" in entry:
            for number, form in ((1, 0), (3, 1), (5, 2)):
                got = compiled.ngettext(msgid, entry["msgid_plural"], number)
                assert got == entry["msgstr"][form], msgid
        else:
            assert compiled.gettext(msgid) == entry["msgstr"][0], msgid


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="GNU gettext is not installed")
@pytest.mark.parametrize("path", CATALOGS, ids=lambda path: path.parts[-5])
def test_msgfmt_accepts_the_catalog(path):
    result = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", os.devnull, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "untranslated" not in result.stderr and "fuzzy" not in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="GNU gettext is not installed")
@pytest.mark.parametrize("path", CATALOGS, ids=lambda path: path.parts[-5])
def test_the_catalog_holds_every_string_the_code_marks(path, tmp_path):
    # makemessages on a copy of the package: what the code and templates mark for
    # translation today; the shipped catalog must have each of them (a string added
    # since the last makemessages would reach Russian users in English).
    package = path.parents[3]
    copy = tmp_path / package.name
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "var"))
    result = subprocess.run(
        [sys.executable, "-m", "django", "makemessages", "-l", "ru"],
        cwd=copy,
        capture_output=True,
        text=True,
        check=False,
        env={key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"},
    )
    assert result.returncode == 0, result.stderr
    fresh = parse_po(copy / "locale" / "ru" / "LC_MESSAGES" / "django.po")
    shipped = parse_po(path)

    def keys(entries):
        return {(entry.get("msgctxt"), entry["msgid"]) for entry in entries if entry.get("msgid")}

    assert keys(fresh) - keys(shipped) == set()
