"""Where the pixel goes, which links are rewritten, and that nothing else changes."""

import uuid

import pytest

from notify_tracking.tracking import policy, tokens
from notify_tracking.tracking.rewrite import PIXEL_HTML, rewrite_html
from tests.tracking_support import HTML, click_urls, html_of, path, pixel_urls, queued, send

pytestmark = pytest.mark.django_db

DELIVERY = uuid.UUID("5d4c1f0e-8a3b-4c2d-9e1f-0a1b2c3d4e5f")


def the_pixel(group: bool = False) -> str:
    url = policy.tracking_url("open", tokens.sign_open(DELIVERY, group=group))
    return PIXEL_HTML.format(url=url)


def pixel_only(html: str) -> str:
    return rewrite_html(html, delivery_token=DELIVERY, links=False)


def links_only(html: str) -> str:
    return rewrite_html(html, delivery_token=DELIVERY, pixel=False)


# --- the pixel ---------------------------------------------------------------------


def test_pixel_goes_just_inside_the_closing_body_tag():
    html = "<html><body><p>Hello</p>\n</body>\n</html>\n"
    assert pixel_only(html) == "<html><body><p>Hello</p>\n" + the_pixel() + "</body>\n</html>\n"


def test_pixel_goes_before_an_uppercase_body_end_and_ignores_one_in_a_comment():
    html = "<HTML><BODY><p>a</p><!-- </body> --><script>var s='</body>';</script></BODY></HTML>"
    out = pixel_only(html)
    assert out == html.replace("</BODY>", the_pixel() + "</BODY>")


def test_pixel_without_body_goes_before_html_end_or_at_the_end():
    assert pixel_only("<html><p>x</p></html>") == "<html><p>x</p>" + the_pixel() + "</html>"
    assert pixel_only("<p>fragment</p>") == "<p>fragment</p>" + the_pixel()


def test_pixel_of_a_crlf_document_lands_right():
    html = "<html>\r\n<body>\r\n<p>é</p>\r\n</body>\r\n</html>"
    assert pixel_only(html) == html.replace("</body>", the_pixel() + "</body>")


def test_the_pixel_url_carries_a_signed_token_and_no_address(
    task, django_capture_on_commit_callbacks
):
    (message,) = send(django_capture_on_commit_callbacks, task, ["bob@example.com"], html=HTML)
    (url,) = pixel_urls(html_of(message))
    assert "bob" not in url and "%40" not in url and "@" not in url
    token = path(url).removeprefix("/notify/open/").removesuffix(".gif")
    from notify_tracking.models import Delivery

    assert tokens.read_open(token).delivery == Delivery.objects.get().token


# --- links -------------------------------------------------------------------------

LINKS = """<html><body>
<a href="https://example.com/a">https</a>
<a class="btn" HREF = 'http://example.com/b?x=1&amp;y=2'>http, single quotes, entity</a>
<a href=https://example.com/c>unquoted</a>
<a href="mailto:someone@example.com">mail</a>
<a href="tel:+331234">phone</a>
<a href="#section">anchor</a>
<a href="/relative/path">relative</a>
<a href="javascript:alert(1)">script</a>
<a href="https://example.com/d" data-notify-no-track>opted out</a>
<a href="https://example.com/account/unsubscribe?u=1">unsubscribe</a>
<a name="no-href">no href</a>
<!-- <a href="https://example.com/in-comment">commented out</a> -->
<a href="https://example.com/e"/>
</body></html>"""


def test_exactly_the_http_links_are_rewritten_to_signed_click_urls():
    out = links_only(LINKS)
    targets = [tokens.read_click(path(url).split("/")[3]) for url in click_urls(out)]
    assert [target.url for target in targets] == [
        "https://example.com/a",
        "http://example.com/b?x=1&y=2",
        "https://example.com/c",
        "https://example.com/e",
    ]
    assert all(target.delivery == DELIVERY for target in targets)
    for untouched in (
        'href="mailto:someone@example.com"',
        'href="tel:+331234"',
        'href="#section"',
        'href="/relative/path"',
        'href="javascript:alert(1)"',
        'href="https://example.com/d" data-notify-no-track',
        'href="https://example.com/account/unsubscribe?u=1"',
        '<!-- <a href="https://example.com/in-comment">commented out</a> -->',
    ):
        assert untouched in out


def test_everything_but_the_rewritten_values_is_byte_identical():
    out = links_only(LINKS)
    restored = out
    originals = {
        "https://example.com/a": "https://example.com/a",
        "http://example.com/b?x=1&y=2": "http://example.com/b?x=1&amp;y=2",
        "https://example.com/c": "https://example.com/c",
        "https://example.com/e": "https://example.com/e",
    }
    for url in click_urls(out):
        target = tokens.read_click(path(url).split("/")[3]).url
        restored = restored.replace(url, originals[target], 1)
    assert restored == LINKS


def test_list_unsubscribe_urls_and_our_own_urls_are_not_rewritten():
    own = policy.tracking_url("download", tokens.sign_download(DELIVERY, 3))
    html = f'<p><a href="https://lists.example.com/u/9">stop</a><a href="{own}">file</a></p>'
    out = rewrite_html(
        html, delivery_token=DELIVERY, pixel=False, skip_urls=["https://lists.example.com/u/9"]
    )
    assert out == html


def test_no_base_url_means_no_tracking(task, settings, django_capture_on_commit_callbacks):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "BASE_URL": None}
    (message,) = send(django_capture_on_commit_callbacks, task, ["bob@example.com"], html=HTML)
    assert html_of(message) == HTML


# --- through the email channel -----------------------------------------------------


def test_the_sent_email_has_the_pixel_and_tracked_links(task, django_capture_on_commit_callbacks):
    (message,) = send(django_capture_on_commit_callbacks, task, ["bob@example.com"], html=HTML)
    html = html_of(message)
    assert len(pixel_urls(html)) == 1
    assert len(click_urls(html)) == 1
    assert html.index("<img src=") < html.index("</body>")
    assert message.body == "Alice commented on Fix the login page."  # text part untouched


def test_a_text_only_email_gets_no_pixel_and_its_opens_are_not_trackable(
    task, django_capture_on_commit_callbacks
):
    (message,) = send(django_capture_on_commit_callbacks, task, ["bob@example.com"])
    assert message.alternatives == []
    assert "/notify/" not in message.body
    from notify_tracking.models import Delivery

    delivery = Delivery.objects.get()
    assert policy.opens_trackable(delivery) is False


def test_opens_trackable_says_yes_for_an_html_email(task):
    (delivery,) = queued(task, ["bob@example.com"], html=HTML)
    assert policy.opens_trackable(delivery) is True
    assert policy.clicks_trackable(delivery) is True


def test_a_link_broken_over_lines_is_signed_as_a_browser_reads_it():
    html = '<a href="  https://example.com/tasks/\n1?tab=\r\nall\t ">task</a>'
    (url,) = click_urls(links_only(html))
    assert tokens.read_click(path(url).split("/")[3]).url == "https://example.com/tasks/1?tab=all"
