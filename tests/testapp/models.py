import uuid

from django.db import models


class Task(models.Model):
    title = models.CharField(max_length=200)

    def __str__(self):
        return self.title


class Comment(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="comments")
    body = models.TextField()

    def __str__(self):
        return self.body[:40]


class UUIDTask(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    title = models.CharField(max_length=200)

    def __str__(self):
        return self.title


class OpenTask(Task):
    """A proxy of Task, as a host may notify on (its rows are Task rows)."""

    class Meta:
        proxy = True


class Ticket(models.Model):
    """A target keyed by text, as "PROJ/123" or "ops:42" in an issue tracker."""

    key = models.CharField(primary_key=True, max_length=200)

    def __str__(self):
        return self.key
