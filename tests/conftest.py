import pytest

from tests.celery_app import app as celery_app  # noqa: F401  (shared_task binds to it)


def pytest_sessionstart(session):
    """A run told to use PostgreSQL or a broker fails at once when it cannot reach it."""
    from tests.integration.services import unreachable_services

    problems = unreachable_services()
    if problems:
        pytest.exit("configured test services are unreachable:\n" + "\n".join(problems), 3)


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty cache (locmem outlives a test otherwise), and with
    nothing the pixel remembers of it (the quiet after a nudge)."""
    from django.core.cache import cache

    from notify_tracking.tracking import pending

    cache.clear()
    pending._quiet_until = 0.0


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "pw")


@pytest.fixture
def task(db):
    from tests.testapp.models import Task

    return Task.objects.create(title="Fix the login page")
