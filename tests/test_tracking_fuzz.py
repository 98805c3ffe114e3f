"""Whatever a client puts in a tracking URL, the answer is bounded and nothing is written."""

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notify_tracking.models import DeliveryEvent
from notify_tracking.tracking.views import PIXEL_GIF

pytestmark = pytest.mark.django_db

ANY_TOKEN = st.text(min_size=1, max_size=300)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def url(prefix: str, token: str, suffix: str) -> str:
    return f"/notify/{prefix}/{quote(token, safe='')}{suffix}"


@FUZZ
@given(token=ANY_TOKEN)
def test_the_pixel_answers_the_gif_to_any_token(client, token):
    response = client.get(url("open", token, ".gif"))
    if "/" in token:  # a decoded slash is another path, not our route
        assert response.status_code == 404
    else:
        assert response.status_code == 200
        assert response.content == PIXEL_GIF
    assert not DeliveryEvent.objects.exists()


@FUZZ
@given(token=ANY_TOKEN, kind=st.sampled_from(["click", "download"]))
def test_links_and_downloads_answer_404_to_any_token(client, token, kind):
    response = client.get(url(kind, token, "/"))
    assert response.status_code == 404
    assert "Location" not in response
    assert not DeliveryEvent.objects.exists()
