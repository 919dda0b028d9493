from __future__ import annotations

from django import forms


class NotificationForm(forms.Form):
    recipient = forms.EmailField()
    subject = forms.CharField(max_length=200)
    body = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class ReportForm(forms.Form):
    title = forms.CharField(max_length=200)
    hours = forms.IntegerField(
        min_value=1, max_value=24 * 366, initial=24, help_text="Period: the last N hours."
    )


class CommentForm(forms.Form):
    author = forms.CharField(max_length=100)
    body = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="More than two links and it is held for a moderator.",
    )
