from django.contrib import admin

from .models import MailboxMessage


@admin.register(MailboxMessage)
class MailboxMessageAdmin(admin.ModelAdmin):
    list_display = ["subject", "to", "sent_at"]
    search_fields = ["subject", "to", "message_id"]
    date_hierarchy = "sent_at"
    readonly_fields = [field.name for field in MailboxMessage._meta.fields]

    def has_add_permission(self, request):
        return False
