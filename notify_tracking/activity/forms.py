"""Forms: a user's tracking preferences, and the activity log's search (admin page)."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from .. import status as st
from ..models import STATUS_LABELS, TrackingPreference


class TrackingPreferenceForm(forms.ModelForm):
    """The current user's choices; the user is set by the view, never by the form."""

    class Meta:
        model = TrackingPreference
        fields = [
            "request_delivery_reports",
            "request_read_receipts",
            "read_notice",
            "allow_tracking",
        ]


class ActivitySearchForm(forms.Form):
    """The search fields of the admin page; :mod:`.filters` validates the values."""

    recipient = forms.CharField(label=_("Recipient (exact)"), required=False)
    recipient_prefix = forms.CharField(label=_("Recipient starts with"), required=False)
    subject = forms.CharField(label=_("Subject words"), required=False)
    target = forms.CharField(
        label=_("Target"), required=False, help_text=_("<app_label>.<model>:<pk>")
    )
    status = forms.ChoiceField(
        label=_("Status"),
        required=False,
        choices=[("", _("any")), *((status, STATUS_LABELS[status]) for status in st.STATUSES)],
    )
    channel = forms.CharField(label=_("Channel"), required=False)
    sender = forms.CharField(
        label=_("Sender"), required=False, help_text=_("user name, email or id")
    )
    since = forms.CharField(label=_("Since"), required=False, help_text=_("e.g. 2024-05-03"))
    until = forms.CharField(label=_("Until"), required=False, help_text=_("e.g. 2024-05-03"))
