from __future__ import annotations

from typing import Any

from django import forms

from example import imports


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


class ContactImportForm(forms.Form):
    contacts = forms.CharField(
        # Room for MAX_ROWS full rows; Django refuses a longer text with a form error.
        max_length=imports.MAX_ROWS * (imports.NAME_LENGTH + imports.EMAIL_LENGTH + 4),
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text=(
            f"One contact a line: a name, a comma and an email address (at most "
            f"{imports.MAX_ROWS}). Each line is imported by its own job; a line whose address "
            "is not one fails."
        ),
    )

    def __init__(self, *args: Any, summary_to: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.summary_to = summary_to

    def clean_contacts(self) -> list[imports.PastedContact]:
        return imports.parse_contacts(self.cleaned_data["contacts"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.summary_to:
            raise forms.ValidationError(
                "Your account has no email address to mail the import's summary to: ask an "
                "administrator to add one."
            )
        return cleaned
