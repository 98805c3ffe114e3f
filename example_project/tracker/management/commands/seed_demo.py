"""Create the demo's users, contact, tasks and comments, once; running it again changes nothing.

Demo only: the passwords below are public (the login page shows them).
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from ... import notifications
from ...models import Comment, Contact, Task

ADMIN = ("admin", "admin")  # username, password
STAFF_PASSWORD = "demo"
STAFF = [
    # username, first name, last name
    ("alice", "Alice", "Martin"),
    ("bob", "Bob", "Chen"),
    ("carol", "Carol", "Diaz"),
]
CONTACT = ("Dana Vendor", "dana@vendor.example")
TASKS = [
    {
        "title": "Login page rejects valid passwords",
        "description": "Since Monday's deploy, some users cannot log in with a correct password.",
        "created_by": "alice",
        "assignee": "bob",
        "watchers": ["alice", "carol"],
        "contacts": True,
        "comments": [
            ("alice", "Reproduced in Firefox and Chrome: passwords with a trailing space fail."),
            ("bob", "Found it: the new form strips whitespace. A fix is on its way."),
        ],
    },
    {
        "title": "Write the release notes for 2.4",
        "description": "One paragraph per visible change, with screenshots.",
        "created_by": "carol",
        "assignee": "carol",
        "watchers": ["bob"],
        "contacts": False,
        "comments": [("bob", "Don't forget the new export button.")],
    },
]


class Command(BaseCommand):
    help = "Create the demo data (users, an external contact, tasks, comments) if missing."

    def handle(self, *args, **options):
        with transaction.atomic():
            users = {name: self.staff(name, *names) for name, *names in STAFF}
            users["admin"] = self.admin()
            name, email = CONTACT
            contact, _ = Contact.objects.get_or_create(email=email, defaults={"name": name})
            created = [spec["title"] for spec in TASKS if self.task(spec, users, contact)]
        if options["verbosity"] == 0:
            return
        if created:
            self.stdout.write(f"Seeded {len(created)} task(s) with comments and notifications.")
        else:
            self.stdout.write("Demo data already present.")

    def admin(self):
        User = get_user_model()
        username, password = ADMIN
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_superuser(username, f"{username}@example.com", password)
        return user

    def staff(self, username, first_name, last_name):
        user, created = get_user_model().objects.get_or_create(
            username=username,
            defaults={
                "first_name": first_name,
                "last_name": last_name,
                "email": f"{username}@example.com",
                "is_staff": True,
            },
        )
        if created:
            user.set_password(STAFF_PASSWORD)
            user.save(update_fields=["password"])
        return user

    def task(self, spec, users, contact) -> bool:
        """Create the task of ``spec`` with its comments and notifications, unless it exists."""
        if Task.objects.filter(title=spec["title"]).exists():
            return False
        task = Task.objects.create(
            title=spec["title"],
            description=spec["description"],
            created_by=users[spec["created_by"]],
            assignee=users[spec["assignee"]],
        )
        task.watchers.set([users[name] for name in spec["watchers"]])
        if spec["contacts"]:
            task.contacts.add(contact)
        notifications.notify_task_created(task)
        for author, body in spec["comments"]:
            comment = Comment.objects.create(task=task, author=users[author], body=body)
            notifications.notify_comment(comment)
        return True
