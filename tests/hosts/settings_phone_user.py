"""The test settings with a user model that has no email field (tests/hosts/phone_user):
for tests/hosts/phone_user_checks.py, which ``make test`` runs apart, as the user model
cannot change within one run."""

from tests.settings import *  # noqa: F403
from tests.settings import DATABASE_URL, DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.hosts.phone_user"]
AUTH_USER_MODEL = "phone_user.User"
if DATABASE_URL:  # a test database of its own beside the suite's, named after it
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_phone_user"}
