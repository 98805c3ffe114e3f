"""Smoke test of an installed wheel: the package works with no source tree on the path.

Run it with the interpreter of a clean virtual environment where only the wheel (and
its dependencies) is installed, from a directory outside the source tree:

    cd /tmp && /path/to/venv/bin/python /path/to/scripts/wheel_smoke.py \\
        --wheel dist/django_notify_tracking-X-py3-none-any.whl \\
        --example-project /path/to/source/example_project

It checks that:

1. the wheel holds the templates, static files, compiled translations (.mo),
   migrations and ``py.typed``, and no tests or demo;
2. ``notify_tracking`` is imported from the environment's site-packages;
3. with a throwaway settings module (SQLite in a temporary directory, locmem email,
   Celery eager): ``migrate`` and ``check`` pass, ``notify()`` ends ``sent`` with the
   tracking pixel in the email, ``{% delivery_badge %}`` renders, and the Russian
   catalogue translates;
4. with ``--example-project``: a copy of the demo project, with this package from the
   wheel, runs its migrations.

Prints one line per check and exits non-zero at the first failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

#: Files the wheel must hold (paths inside it).
REQUIRED_IN_WHEEL = [
    "notify_tracking/py.typed",
    "notify_tracking/templates/notify_tracking/badge.html",
    "notify_tracking/templates/notify_tracking/email/read_notice.txt",
    "notify_tracking/static/notify_tracking/badge.css",
    "notify_tracking/static/notify_tracking/badge.js",
    "notify_tracking/static/notify_tracking/icons/read.svg",
    "notify_tracking/locale/ru/LC_MESSAGES/django.mo",
    "notify_tracking/migrations/__init__.py",
    "notify_tracking/migrations/0001_initial.py",
    "notify_tracking/management/commands/notify_tracking_purge.py",
]
#: Top-level folders that belong in the sdist only.
NOT_IN_WHEEL = ("tests/", "example_project/", "docs/", "bench/", "scripts/")

SETTINGS = """
SECRET_KEY = "wheel-smoke-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = True
ROOT_URLCONF = "smoke_urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "notify_tracking",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
STATIC_URL = "/static/"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB_PATH}}
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DEFAULT_FROM_EMAIL = "tracker@example.com"
CELERY_BROKER_URL = "memory://"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
NOTIFY_TRACKING = {"BASE_URL": "https://tracker.example.com"}
"""

URLS = """
from django.urls import include, path

urlpatterns = [path("notify/", include("notify_tracking.urls"))]
"""


def ok(message: str) -> None:
    print(f"[wheel smoke] ok: {message}", flush=True)


def fail(message: str) -> None:
    print(f"[wheel smoke] FAILED: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def check_wheel(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in REQUIRED_IN_WHEEL if name not in names]
    if missing:
        fail(f"{wheel.name} lacks {', '.join(missing)}")
    extra = sorted(name for name in names if name.startswith(NOT_IN_WHEEL))
    if extra:
        fail(f"{wheel.name} holds files of the sdist only: {', '.join(extra[:5])}")
    ok(f"{wheel.name}: {len(names)} files, templates, static, .mo, migrations, py.typed")


def check_installed_copy() -> Path:
    import notify_tracking

    where = Path(notify_tracking.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    if site not in where.parents:
        fail(f"notify_tracking was imported from {where}, not from {site}")
    for name in REQUIRED_IN_WHEEL:
        if not (where.parent / name).is_file():
            fail(f"the installed package lacks {name}")
    ok(f"notify_tracking {notify_tracking.__version__} imported from {where}")
    return where


def run_app_checks(workdir: Path) -> None:
    (workdir / "smoke_settings.py").write_text(
        f"DB_PATH = {str(workdir / 'smoke.sqlite3')!r}\n" + SETTINGS
    )
    (workdir / "smoke_urls.py").write_text(URLS)
    sys.path.insert(0, str(workdir))
    os.environ["DJANGO_SETTINGS_MODULE"] = "smoke_settings"

    import django

    django.setup()

    from celery import Celery

    celery_app = Celery("smoke")
    celery_app.config_from_object("django.conf:settings", namespace="CELERY")
    celery_app.set_default()

    from django.contrib.auth import get_user_model
    from django.core import mail
    from django.core.management import call_command
    from django.db import transaction
    from django.template import Context, Template
    from django.utils import translation

    call_command("migrate", verbosity=0)
    call_command("check", fail_level="WARNING")
    ok(f"migrate and check pass (Django {django.get_version()})")

    from notify_tracking import notify, summary
    from notify_tracking.models import Delivery

    user_model = get_user_model()
    staff = user_model.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    target = user_model.objects.create_user("target", "target@example.com", "pw")
    with transaction.atomic():  # the send is enqueued on commit, as in a request
        notification = notify(
            target,
            ["bob@example.com", staff],
            subject="Smoke test",
            text="Hello",
            html="<p>Hello <a href='https://example.com/task/1'>task</a></p>",
            sender=staff,
        )
    deliveries = Delivery.objects.filter(notification=notification)
    statuses = sorted(deliveries.values_list("status", flat=True))
    if statuses != ["sent", "sent"]:
        fail(f"deliveries ended {statuses}, expected two 'sent'")
    if len(mail.outbox) != 2:
        fail(f"{len(mail.outbox)} emails in the outbox, expected 2")
    html = mail.outbox[0].alternatives[0][0]
    if "https://tracker.example.com/notify/open/" not in html:
        fail("the email has no tracking pixel")
    ok("notify() sent 2 deliveries through locmem email and eager Celery: both 'sent'")

    if summary(target)["label"] != "Sent":
        fail(f"summary label {summary(target)['label']!r}, expected 'Sent'")
    badge = Template("{% load notify_tracking %}{% delivery_badge target %}").render(
        Context({"target": target, "user": staff})
    )
    if "nt-badge" not in badge or "bob@example.com" not in badge:
        fail(f"the badge did not render: {badge[:200]!r}")
    ok("{% delivery_badge %} renders the badge and its popup")

    with translation.override("ru"):
        label = summary(target)["label"]
    if label != "Отправлено":
        fail(f"the Russian catalogue (django.mo) gave {label!r} for 'Sent'")
    ok(f"Russian translation from the wheel's django.mo: 'Sent' -> {label!r}")


def run_example_project(source: Path, workdir: Path) -> None:
    copy = workdir / "project"
    shutil.copytree(
        source, copy / "example_project", ignore=shutil.ignore_patterns("var", "__pycache__")
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DEMO_VAR_DIR": str(workdir / "demo-var"),
    }
    env.pop("PYTHONPATH", None)
    manage = [sys.executable, str(copy / "example_project" / "manage.py")]
    outputs = []
    for args in (["migrate", "--verbosity", "1"], ["check"]):
        result = subprocess.run(  # noqa: S603  (our own interpreter and script)
            [*manage, *args], cwd=copy, env=env, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            fail(f"example project: manage.py {' '.join(args)}:\n{result.stdout}{result.stderr}")
        outputs.append(result.stdout)
    if "Applying notify_tracking.0001_initial" not in outputs[0]:
        fail(f"example project: migrate did not apply notify_tracking's:\n{outputs[0]}")
    probe = "import notify_tracking; print(notify_tracking.__file__)"
    result = subprocess.run(  # noqa: S603
        [*manage, "shell", "-c", probe], cwd=copy, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    site = str(Path(sysconfig.get_paths()["purelib"]).resolve())
    if result.returncode != 0 or not any(
        line.startswith(site) for line in result.stdout.splitlines()
    ):
        fail(f"example project imported notify_tracking from {result.stdout or result.stderr}")
    ok("the example project's migrations run against the installed package")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="the .whl file to inspect")
    parser.add_argument("--example-project", type=Path, help="a source tree's example_project/")
    args = parser.parse_args(argv)

    if Path.cwd().joinpath("notify_tracking").is_dir():
        fail("run this from outside the source tree (e.g. cd /tmp)")
    if args.wheel:
        check_wheel(args.wheel)
    check_installed_copy()
    with tempfile.TemporaryDirectory(prefix="nt-wheel-smoke-") as tmp:
        workdir = Path(tmp)
        run_app_checks(workdir)
        if args.example_project:
            run_example_project(args.example_project.resolve(), workdir)
    print("[wheel smoke] all checks passed", flush=True)


if __name__ == "__main__":
    main()
