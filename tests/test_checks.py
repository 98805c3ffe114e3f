"""System checks name the bad key; docs/settings.md documents every key with its default."""

import ast
import re
from pathlib import Path

import pytest
from django.core.checks import Tags, run_checks
from django.core.exceptions import ImproperlyConfigured
from django.template import TemplateDoesNotExist
from django.test import override_settings

from notify_tracking.checks import VALIDATORS, check_settings
from notify_tracking.conf import DEFAULTS, get_channel, get_setting

SETTINGS_DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def errors_for(value):
    with override_settings(NOTIFY_TRACKING=value):
        return [(error.id, error.msg) for error in check_settings()]


def test_defaults_pass():
    assert errors_for({}) == []


def test_every_setting_has_a_validator():
    assert set(VALIDATORS) == set(DEFAULTS)


EMAIL = "notify_tracking.channels.email.EmailChannel"
BAD_VALUES = [
    ({"RETENTION_DAYS": 0}, "['RETENTION_DAYS'] must be a whole number of at least 1"),
    ({"RETENTION_DAYS": "45"}, "['RETENTION_DAYS'] must be a whole number"),
    ({"MAX_ATTEMPTS": True}, "['MAX_ATTEMPTS'] must be a whole number"),
    ({"TRACK_OPENS": "yes"}, "['TRACK_OPENS'] must be True or False"),
    ({"BASE_URL": "tracker.example.com"}, "['BASE_URL'] must be an absolute"),
    ({"CHANNELS": {}}, "['CHANNELS'] must be a non-empty dict"),
    (
        {"CHANNELS": {"sms": {"BACKEND": "no.such.Module"}}},
        "['CHANNELS'] channel 'sms': cannot import BACKEND 'no.such.Module'",
    ),
    (
        {"CHANNELS": {"sms": {"BACKEND": "django.http.HttpResponse"}}},
        "['CHANNELS'] channel 'sms': BACKEND must be a subclass of notify_tracking.channels",
    ),
    (
        {"CHANNELS": {"email": {"BACKEND": EMAIL, "OPTIONS": {"SPEED": 11}}}},
        "['CHANNELS'] channel 'email': unknown option(s) SPEED for EmailChannel",
    ),
    ({"DEFAULT_CHANNEL": "sms"}, "['DEFAULT_CHANNEL'] names 'sms', which is not in CHANNELS"),
    (
        {"RETRY_BACKOFF": 60, "RETRY_BACKOFF_MAX": 10},
        "['RETRY_BACKOFF_MAX'] must not be less than RETRY_BACKOFF",
    ),
    ({"OPEN_SPOOL_DIR": "/no/such/spool"}, "['OPEN_SPOOL_DIR'] must be a directory this"),
    ({"OPEN_SPOOL_DIR": 3}, "['OPEN_SPOOL_DIR'] must be None or the path of a directory"),
    (
        {"RETENTON_DAYS": 30},
        "['RETENTON_DAYS'] is not a setting of this version; did you mean 'RETENTION_DAYS'?",
    ),
]


@pytest.mark.parametrize(("value", "expected"), BAD_VALUES)
def test_a_bad_value_fails_with_a_message_naming_the_key(value, expected):
    messages = [message for _, message in errors_for(value)]
    assert any("NOTIFY_TRACKING" + expected in message for message in messages), messages


def test_not_a_dict():
    assert errors_for(["RETENTION_DAYS"]) == [
        ("notify_tracking.E001", "settings.NOTIFY_TRACKING must be a dict")
    ]


def test_rest_framework_missing_from_installed_apps_is_warned(client, admin_user, settings):
    """Installed but not listed, DRF's browsable pages answer 500 (found following the
    installation page before it listed "rest_framework")."""
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "rest_framework"]
    warnings = [e for e in run_checks(tags=[Tags.compatibility]) if e.id.startswith("notify")]
    client.force_login(admin_user)
    with pytest.raises(TemplateDoesNotExist):  # what the check warns of
        client.get("/notify/api/status/", {"targets": "testapp.task:1"}, HTTP_ACCEPT="text/html")
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "rest_framework"]
    listed = [e for e in run_checks(tags=[Tags.compatibility]) if e.id.startswith("notify")]

    assert [warning.id for warning in warnings] == ["notify_tracking.W002"]
    assert "'rest_framework' is not in INSTALLED_APPS" in warnings[0].msg
    assert listed == []


def test_rest_framework_unlisted_but_rendering_json_only_is_not_warned(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "rest_framework"]
    settings.REST_FRAMEWORK = {
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    }
    warnings = [e for e in run_checks(tags=[Tags.compatibility]) if e.id.startswith("notify")]
    assert warnings == []


def test_use_tz_false_is_refused_by_manage_py_check():
    """With naive times not one event could be recorded (a sent message stayed queued)."""
    with override_settings(USE_TZ=False):
        errors = run_checks(tags=[Tags.compatibility])
    assert [(error.id, error.msg) for error in errors if error.id.startswith("notify")] == [
        (
            "notify_tracking.E006",
            "notify_tracking needs USE_TZ = True: it records and compares aware times, and "
            "with USE_TZ = False it could record no event of any delivery.",
        )
    ]
    assert not [error for error in run_checks(tags=[Tags.compatibility]) if error.is_serious()]


def test_get_setting_returns_user_value_or_default():
    with override_settings(NOTIFY_TRACKING={"RETENTION_DAYS": 90}):
        assert get_setting("RETENTION_DAYS") == 90
        assert get_setting("MAX_ATTEMPTS") == DEFAULTS["MAX_ATTEMPTS"]
    with pytest.raises(ImproperlyConfigured, match="no setting 'NOPE'"):
        get_setting("NOPE")


def test_unknown_channel_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured, match=r"no channel 'sms' \(configured: email\)"):
        get_channel("sms")


def documented_defaults() -> dict[str, str]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| `(.*?)` \|", SETTINGS_DOC.read_text(), re.MULTILINE)
    return dict(rows)


def test_settings_doc_lists_every_setting_with_its_default():
    documented = documented_defaults()
    assert set(documented) == set(DEFAULTS), "docs/settings.md and conf.DEFAULTS disagree"
    for key, text in documented.items():
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # e.g. a dotted path written without quotes
        assert value == DEFAULTS[key], f"docs/settings.md: default of {key}"
