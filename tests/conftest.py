import pytest

from tests.celery_app import app as celery_app  # noqa: F401  (shared_task binds to it)


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "pw")


@pytest.fixture
def task(db):
    from tests.testapp.models import Task

    return Task.objects.create(title="Fix the login page")
