"""Tokens of the tracking URLs: what they carry, and that nothing else passes."""

import base64
import json
import uuid

import pytest
from django.test import override_settings

from notify_tracking.tracking import tokens

DELIVERY = uuid.UUID("0b7f5a7e-44c4-4d55-9a43-2d2f3f1e8c11")


def test_open_token_round_trip_and_no_address_inside():
    token = tokens.sign_open(DELIVERY)
    assert tokens.read_open(token) == tokens.OpenToken(DELIVERY, group=False)
    assert tokens.read_open(tokens.sign_open(DELIVERY, group=True)).group is True
    assert "@" not in token
    assert set(token) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def test_click_token_signs_delivery_and_url():
    url = "https://tracker.example.com/tasks/1?tab=comments&x=é#c12"
    assert tokens.read_click(tokens.sign_click(DELIVERY, url)) == tokens.ClickToken(DELIVERY, url)


def test_download_token_round_trip():
    token = tokens.sign_download(DELIVERY, 42, group=True)
    assert tokens.read_download(token) == tokens.DownloadToken(DELIVERY, 42, group=True)


def flip(text: str, index: int) -> str:
    char = text[index]
    return text[:index] + ("b" if char != "b" else "c") + text[index + 1 :]


@pytest.mark.parametrize("index", [0, 10, 31, 40, -1])
def test_tampered_open_token_is_refused(index):
    token = tokens.sign_open(DELIVERY)
    with pytest.raises(tokens.InvalidToken):
        tokens.read_open(flip(token, index))


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "x" * 5000, "a.b", "." * 10, "0b7f5a7e44c44d559a432d2f3f1e8c11"],
)
def test_garbage_is_refused(token):
    for read in (tokens.read_open, tokens.read_click, tokens.read_download):
        with pytest.raises(tokens.InvalidToken):
            read(token)


def test_truncated_token_is_refused():
    token = tokens.sign_open(DELIVERY)
    for cut in (1, 5, 40):
        with pytest.raises(tokens.InvalidToken):
            tokens.read_open(token[:-cut])


def test_a_token_of_one_purpose_is_refused_for_another():
    open_token = tokens.sign_open(DELIVERY)
    click_token = tokens.sign_click(DELIVERY, "https://example.com/")
    download_token = tokens.sign_download(DELIVERY, 1)
    with pytest.raises(tokens.InvalidToken):
        tokens.read_click(open_token)
    with pytest.raises(tokens.InvalidToken):
        tokens.read_open(click_token)
    with pytest.raises(tokens.InvalidToken):
        tokens.read_open(download_token)
    with pytest.raises(tokens.InvalidToken):
        tokens.read_download(open_token)


def test_the_url_of_a_click_token_cannot_be_swapped():
    token = tokens.sign_click(DELIVERY, "https://example.com/")
    payload, signature = token.rsplit(".", 1)
    forged_payload = (
        base64.urlsafe_b64encode(
            json.dumps([DELIVERY.hex, False, "https://evil.example/"]).encode()
        )
        .decode()
        .rstrip("=")
    )
    with pytest.raises(tokens.InvalidToken):
        tokens.read_click(f"{forged_payload}.{signature}")
    assert payload != forged_payload


def test_another_secret_key_makes_every_token_invalid():
    with override_settings(SECRET_KEY="another-key-entirely"):
        foreign = tokens.sign_open(DELIVERY)
    with pytest.raises(tokens.InvalidToken):
        tokens.read_open(foreign)


def test_a_rotated_key_is_still_accepted_from_the_fallbacks():
    with override_settings(SECRET_KEY="old-key-being-rotated-out"):
        old = tokens.sign_open(DELIVERY)
    with override_settings(SECRET_KEY_FALLBACKS=["old-key-being-rotated-out"]):
        assert tokens.read_open(old).delivery == DELIVERY
