"""Machine-open heuristics, one by one: the rule alone, then through the endpoints."""

import datetime as dt
import re

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from django.utils import timezone

from notify_tracking import record_event
from notify_tracking.checks import check_settings
from notify_tracking.tracking import classify, tokens
from notify_tracking.tracking.networks import NetworkSet, parse_networks
from tests.tracking_support import HTML, mark_sent, queued

NOW = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.timezone.utc)
LONG_AGO = NOW - dt.timedelta(minutes=5)
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
APPLE_PROXY = "Mozilla/5.0"


def hit(action=classify.OPEN, *, method="GET", ua=THUNDERBIRD, ip=None, sent_at=LONG_AGO):
    return classify.Hit(action, method, ua, ip, NOW, sent_at)


@pytest.fixture
def apple_networks(settings):
    settings.NOTIFY_TRACKING = {
        **settings.NOTIFY_TRACKING,
        "APPLE_PROXY_NETWORKS": ["17.0.0.0/8", "172.224.224.0/27", "2a02:26f7:b3c0:4000::/64"],
    }


# --- the rules alone ---------------------------------------------------------------


def test_a_mail_client_long_after_sending_is_a_person():
    assert classify.classify(hit()) == classify.Verdict(False)


def test_head_is_a_machine():
    assert classify.classify(hit(method="HEAD")).reason == "head_request"


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (compatible; Barracuda Sentinel)",
        "Mimecast-URL-Protect/1.0",
        "python-requests/2.32.3",
        "Mozilla/5.0 (X11) AppleWebKit/537.36 HeadlessChrome/126.0 Safari/537.36",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    ],
)
def test_known_scanner_user_agents_are_machines(ua):
    verdict = classify.classify(hit(ua=ua))
    assert verdict.is_machine and verdict.reason == "scanner_user_agent"
    assert verdict.details["scanner"].lower() in ua.lower()


def test_the_scanner_list_is_a_setting_that_replaces_the_default(settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "SCANNER_USER_AGENTS": ["AcmeGuard"]}
    assert classify.classify(hit(ua="AcmeGuard/2.0")).reason == "scanner_user_agent"
    assert classify.classify(hit(ua="python-requests/2.32")).is_machine is False


def test_no_user_agent_is_a_machine():
    assert classify.classify(hit(ua="")).reason == "no_user_agent"
    assert classify.classify(hit(ua="   ")).reason == "no_user_agent"


def test_apple_proxy_user_agent_is_mpp_for_opens_and_bare_for_clicks():
    assert classify.classify(hit(ua=APPLE_PROXY)).reason == "apple_mpp"
    assert classify.classify(hit(classify.CLICK, ua=APPLE_PROXY)).reason == "bare_user_agent"
    iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
    assert classify.classify(hit(ua=iphone)).is_machine is False


def test_apple_networks_make_opens_machines_only_when_configured(apple_networks):
    verdict = classify.classify(hit(ip="17.58.1.20"))
    assert verdict.reason == "apple_mpp" and verdict.details["matched"] == "network"
    assert classify.classify(hit(ip="172.224.224.7")).reason == "apple_mpp"
    assert classify.classify(hit(ip="2a02:26f7:b3c0:4000::99")).reason == "apple_mpp"
    assert classify.classify(hit(ip="172.224.224.40")).is_machine is False  # outside the /27
    # Safari users of iCloud Private Relay click from the same networks: still people.
    assert classify.classify(hit(classify.CLICK, ip="17.58.1.20")).is_machine is False


def test_apple_networks_are_ignored_when_none_are_configured():
    assert classify.classify(hit(ip="17.58.1.20")).is_machine is False


def test_apple_networks_can_be_read_from_apples_csv(settings, tmp_path):
    csv = tmp_path / "egress-ip-ranges.csv"
    csv.write_text(
        "# Apple egress\n172.224.226.0/27,GB,GB-EN,London,\n\n2a02:26f7:b3c0:4000::/64,GB,,,\n"
    )
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "APPLE_PROXY_NETWORKS": str(csv)}
    assert classify.classify(hit(ip="172.224.226.31")).reason == "apple_mpp"
    assert classify.classify(hit(ip="172.224.226.32")).is_machine is False


def test_opens_soon_after_sending_are_a_scanners(settings):
    verdict = classify.classify(hit(sent_at=NOW - dt.timedelta(seconds=3)))
    assert verdict.reason == "too_soon_after_sending"
    assert verdict.details["seconds_after_sending"] == 3.0
    assert classify.classify(hit(sent_at=NOW - dt.timedelta(seconds=11))).is_machine is False
    assert classify.classify(hit(sent_at=None)).is_machine is False  # unknown: no verdict
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "SCANNER_WINDOW_SECONDS": 0}
    assert classify.classify(hit(sent_at=NOW - dt.timedelta(seconds=1))).is_machine is False


def test_gmail_image_proxy_is_a_person_whose_later_opens_may_be_cached():
    verdict = classify.classify(hit(ua=GMAIL_PROXY))
    assert verdict.is_machine is False
    assert verdict.details == {"image_proxy": "google", "later_opens_may_be_cached": True}


# --- networks ----------------------------------------------------------------------


def test_network_set_membership():
    networks = NetworkSet(parse_networks(["10.0.0.0/8", "192.0.2.128/25", "::/0", "0.0.0.0/32"]))
    assert "10.255.1.1" in networks
    assert "192.0.2.200" in networks and "192.0.2.100" not in networks
    assert "2001:db8::1" in networks  # ::/0 holds every IPv6 address
    assert "::ffff:10.1.2.3" in networks  # IPv4-mapped IPv6 is its IPv4 address
    assert "not an address" not in networks
    assert len(networks) == 4


def test_a_bad_network_is_a_configuration_error_naming_it(tmp_path):
    with pytest.raises(ImproperlyConfigured, match=re.escape("'17.0.0.0/33'")):
        parse_networks(["17.0.0.0/33"])
    bad = tmp_path / "ranges.csv"
    bad.write_text("17.0.0.0/8,US\nnonsense,US\n")
    with pytest.raises(ImproperlyConfigured, match="line 2 'nonsense'"):
        parse_networks(str(bad))
    with pytest.raises(ImproperlyConfigured, match="cannot read"):
        parse_networks(str(tmp_path / "missing.csv"))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("APPLE_PROXY_NETWORKS", ["17.0.0.0/8", "x"], "'x' is not an IP network"),
        ("APPLE_PROXY_NETWORKS", 17, "must be a list of networks"),
        ("SCANNER_WINDOW_SECONDS", -1, "must be a number of seconds"),
        ("SCANNER_USER_AGENTS", "Barracuda", "must be a list of non-empty strings"),
        ("ONE_EMAIL_PER_NOTIFICATION", "yes", "must be True or False"),
        ("STORE_IP_ADDRESSES", 1, "must be True or False"),
        ("TRACK_DOWNLOADS", None, "must be True or False"),
    ],
)
def test_bad_tracking_settings_fail_the_system_check(settings, key, value, message):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, key: value}
    errors = [error.msg for error in check_settings()]
    assert any(f"NOTIFY_TRACKING[{key!r}]" in error and message in error for error in errors), (
        errors
    )


def test_an_unreadable_network_list_is_logged_and_ignored_by_the_pixel(settings, caplog):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "APPLE_PROXY_NETWORKS": ["bad"]}
    assert classify.classify(hit(ip="17.1.1.1")).is_machine is False
    assert "APPLE_PROXY_NETWORKS is unusable" in caplog.text


# --- through the endpoints ---------------------------------------------------------

LINKS_HTML = (
    '<html><body><a href="https://example.com/one">1</a> <a href="https://example.com/two">2</a>'
    "</body></html>"
)


@pytest.fixture
def delivery(task):
    (delivery,) = queued(task, ["bob@example.com"], html=LINKS_HTML)
    return mark_sent(delivery)


def open_url(delivery):
    return reverse("notify_tracking:open", kwargs={"token": tokens.sign_open(delivery.token)})


def click_url(delivery, url):
    token = tokens.sign_click(delivery.token, url)
    return reverse("notify_tracking:click", kwargs={"token": token})


@pytest.mark.django_db
def test_an_apple_proxy_open_is_stored_as_machine_and_does_not_move_the_status(client, delivery):
    client.get(open_url(delivery), HTTP_USER_AGENT=APPLE_PROXY)
    event = delivery.events.get(kind="opened")
    assert event.is_machine is True
    assert event.details["machine_reason"] == "apple_mpp"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.open_count, delivery.machine_open_count) == ("sent", 0, 1)


@pytest.mark.django_db
def test_count_machine_opens_lets_them_move_the_status(client, delivery, settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "COUNT_MACHINE_OPENS": True}
    client.get(open_url(delivery), HTTP_USER_AGENT=APPLE_PROXY)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.open_count, delivery.machine_open_count) == ("opened", 1, 1)


@pytest.mark.django_db
def test_an_open_from_apples_network_is_classified_by_its_address(client, delivery, apple_networks):
    client.get(open_url(delivery), HTTP_USER_AGENT=THUNDERBIRD, REMOTE_ADDR="17.100.3.4")
    event = delivery.events.get(kind="opened")
    assert event.details == {"machine_reason": "apple_mpp", "matched": "network"}
    assert event.ip_address is None  # used to classify, not stored


@pytest.mark.django_db
def test_a_gmail_proxy_open_counts_and_says_later_opens_may_be_cached(client, delivery):
    client.get(open_url(delivery), HTTP_USER_AGENT=GMAIL_PROXY)
    event = delivery.events.get(kind="opened")
    assert event.is_machine is False
    assert event.details["later_opens_may_be_cached"] is True
    delivery.refresh_from_db()
    assert delivery.status == "opened"


@pytest.mark.django_db
def test_an_open_right_after_sending_is_a_scanners(client, task):
    (delivery,) = queued(task, ["bob@example.com"], html=HTML)
    mark_sent(delivery, seconds_ago=1)
    client.get(open_url(delivery), HTTP_USER_AGENT=THUNDERBIRD)
    event = delivery.events.get(kind="opened")
    assert event.details["machine_reason"] == "too_soon_after_sending"
    delivery.refresh_from_db()
    assert delivery.status == "sent"


@pytest.mark.django_db
def test_a_scanner_click_is_a_machine_click(client, delivery):
    response = client.get(
        click_url(delivery, "https://example.com/one"), HTTP_USER_AGENT="Mimecast/1.0"
    )
    assert response.status_code == 302  # the scanner still gets where the link goes
    event = delivery.events.get(kind="clicked")
    assert event.is_machine and event.details["machine_reason"] == "scanner_user_agent"


@pytest.mark.django_db
def test_every_link_clicked_within_a_second_is_a_link_scanner(client, delivery):
    client.get(click_url(delivery, "https://example.com/one"), HTTP_USER_AGENT=THUNDERBIRD)
    client.get(click_url(delivery, "https://example.com/two"), HTTP_USER_AGENT=THUNDERBIRD)
    first, second = delivery.events.filter(kind="clicked").order_by("occurred_at", "id")
    assert second.is_machine is True
    assert second.details == {
        "url": "https://example.com/two",
        "machine_reason": "link_burst",
        "links": 2,
    }
    # The first click looked like a person's until the burst completed: revised.
    assert first.is_machine is True
    assert first.details == {
        "url": "https://example.com/one",
        "machine_reason": "link_burst",
        "revised": True,
    }
    delivery.refresh_from_db()
    assert (delivery.status, delivery.click_count, delivery.machine_click_count) == (
        "sent",
        0,
        2,
    )
    assert delivery.first_clicked_at is None


@pytest.mark.django_db
def test_a_burst_revised_counts_when_machine_clicks_count(client, delivery, settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "COUNT_MACHINE_OPENS": True}
    client.get(click_url(delivery, "https://example.com/one"), HTTP_USER_AGENT=THUNDERBIRD)
    client.get(click_url(delivery, "https://example.com/two"), HTTP_USER_AGENT=THUNDERBIRD)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.click_count, delivery.machine_click_count) == (
        "clicked",
        2,
        2,
    )


@pytest.mark.django_db
def test_a_person_clicking_before_the_burst_window_stays_a_person(client, delivery):
    record_event(
        delivery,
        "clicked",
        source="click",
        occurred_at=timezone.now() - dt.timedelta(seconds=5),
        details={"url": "https://example.com/one"},
    )
    client.get(click_url(delivery, "https://example.com/one"), HTTP_USER_AGENT=THUNDERBIRD)
    client.get(click_url(delivery, "https://example.com/two"), HTTP_USER_AGENT=THUNDERBIRD)
    events = list(delivery.events.filter(kind="clicked").order_by("occurred_at", "id"))
    assert [event.is_machine for event in events] == [False, True, True]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.click_count) == ("clicked", 1)


@pytest.mark.django_db
def test_links_clicked_seconds_apart_are_a_person(client, delivery):
    record_event(
        delivery,
        "clicked",
        source="click",
        occurred_at=timezone.now() - dt.timedelta(seconds=3),
        details={"url": "https://example.com/one"},
    )
    client.get(click_url(delivery, "https://example.com/two"), HTTP_USER_AGENT=THUNDERBIRD)
    latest = delivery.events.filter(kind="clicked").latest("occurred_at")
    assert latest.is_machine is False


@pytest.mark.django_db
def test_the_same_link_twice_is_not_a_burst(client, delivery):
    for _ in range(2):
        client.get(click_url(delivery, "https://example.com/one"), HTTP_USER_AGENT=THUNDERBIRD)
    assert not delivery.events.filter(kind="clicked", is_machine=True).exists()
