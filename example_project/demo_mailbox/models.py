from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class MailboxMessage(models.Model):
    """One email as the demo's email backend received it."""

    message_id = models.CharField(_("Message-ID"), max_length=255, db_index=True)
    from_email = models.CharField(_("from"), max_length=320)
    # Every recipient (To, Cc, Bcc), comma separated.
    to = models.TextField(_("to"))
    subject = models.CharField(_("subject"), max_length=998, blank=True)
    text = models.TextField(_("plain text"), blank=True)
    html = models.TextField(_("HTML"), blank=True)
    # The top-level headers as sent: [[name, value], ...], in order.
    headers = models.JSONField(_("headers"), default=list)
    sent_at = models.DateTimeField(_("sent"), default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-sent_at", "-pk"]
        verbose_name = _("mailbox message")
        verbose_name_plural = _("mailbox messages")

    def __str__(self) -> str:
        return f"{self.subject} → {self.to}"
