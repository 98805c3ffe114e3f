from django.contrib import admin

from .models import Delivery, DeliveryEvent, Notification


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = ("recipient", "channel", "status", "error", "sent_at", "first_opened_at")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("subject", "channel", "content_type", "object_id", "created_at")
    list_filter = ("channel",)
    date_hierarchy = "created_at"
    inlines = [DeliveryInline]
    readonly_fields = ("content_type", "object_id", "sender", "created_at")


class DeliveryEventInline(admin.TabularInline):
    model = DeliveryEvent
    extra = 0
    can_delete = False
    fields = ("occurred_at", "kind", "source", "is_machine", "details")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("recipient", "channel", "status", "created_at", "sent_at", "error")
    list_filter = ("status", "channel")
    search_fields = ("=recipient", "notification__subject")
    list_select_related = ("notification",)
    inlines = [DeliveryEventInline]
    readonly_fields = [field.name for field in Delivery._meta.fields]
