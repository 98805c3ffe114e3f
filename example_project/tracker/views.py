"""The tracker's pages: the task list, a task with its comments, new task, assignment."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from . import notifications
from .forms import AssignForm, CommentForm, TaskForm
from .models import Task


@login_required
def task_list(request):
    tasks = Task.objects.select_related("assignee").annotate(comment_count=Count("comments"))
    return render(request, "tracker/task_list.html", {"tasks": tasks})


@login_required
def task_detail(request, pk):
    task = get_object_or_404(Task, pk=pk)
    return _render_detail(request, task)


@login_required
@require_POST
def add_comment(request, pk):
    task = get_object_or_404(Task, pk=pk)
    form = CommentForm(request.POST)
    if not form.is_valid():
        return _render_detail(request, task, comment_form=form, status=400)
    with transaction.atomic():
        comment = form.save(commit=False)
        comment.task, comment.author = task, request.user
        comment.save()
        notification = notifications.notify_comment(comment)
    _say_who_was_notified(request, notification)
    return redirect(comment)


@login_required
@require_POST
def assign(request, pk):
    task = get_object_or_404(Task, pk=pk)
    form = AssignForm(request.POST, instance=task)
    if not form.is_valid():
        return _render_detail(request, task, assign_form=form, status=400)
    with transaction.atomic():
        task = form.save()
        notification = notifications.notify_assigned(task, by=request.user)
    _say_who_was_notified(request, notification)
    return redirect(task)


@login_required
def task_create(request):
    form = TaskForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            task = form.save(commit=False)
            task.created_by = request.user
            task.save()
            form.save_m2m()
            notification = notifications.notify_task_created(task)
        _say_who_was_notified(request, notification)
        return redirect(task)
    return render(request, "tracker/task_form.html", {"form": form})


def _render_detail(request, task, *, comment_form=None, assign_form=None, status=200):
    context = {
        "task": task,
        "comments": task.comments.select_related("author"),
        "comment_form": comment_form or CommentForm(),
        "assign_form": assign_form or AssignForm(instance=task),
    }
    return render(request, "tracker/task_detail.html", context, status=status)


def _say_who_was_notified(request, notification):
    count = notification.deliveries.count() if notification else 0
    if not count:
        messages.success(request, _("Saved. Nobody else follows this task: no notification."))
        return
    text = ngettext(
        "Saved. %(count)d notification is on its way.",
        "Saved. %(count)d notifications are on their way.",
        count,
    ) % {"count": count}
    messages.success(request, text)
