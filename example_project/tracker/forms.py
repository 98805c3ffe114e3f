from django import forms
from django.contrib.auth import get_user_model

from .models import Comment, Task


class UserChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, user):
        return user.get_full_name() or user.get_username()


class UserMultipleChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, user):
        return user.get_full_name() or user.get_username()


def active_users():
    return get_user_model().objects.filter(is_active=True).order_by("username")


class CommentForm(forms.ModelForm):
    class Meta:
        model = Comment
        fields = ["body"]
        widgets = {"body": forms.Textarea(attrs={"rows": 4})}


class TaskForm(forms.ModelForm):
    assignee = UserChoiceField(queryset=active_users(), required=False)
    watchers = UserMultipleChoiceField(
        queryset=active_users(), required=False, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = Task
        fields = ["title", "description", "assignee", "watchers", "contacts"]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 4}),
            "contacts": forms.CheckboxSelectMultiple,
        }


class AssignForm(forms.ModelForm):
    assignee = UserChoiceField(queryset=active_users(), required=False)

    class Meta:
        model = Task
        fields = ["assignee"]
