from django.conf import settings
from django.db import models


class Comment(models.Model):
    """A comment of a task tracker: what the badge page lists."""

    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Comment {self.pk}"
