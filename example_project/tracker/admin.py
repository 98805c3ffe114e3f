from django.contrib import admin

from .models import Comment, Contact, Task


class CommentInline(admin.StackedInline):
    model = Comment
    extra = 0
    readonly_fields = ["created"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["title", "assignee", "created_at"]
    search_fields = ["title", "description"]
    filter_horizontal = ["watchers", "contacts"]
    inlines = [CommentInline]


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    list_display = ["__str__", "task", "author", "created"]
    list_select_related = ["task", "author"]


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["name", "email"]
    search_fields = ["name", "email"]
