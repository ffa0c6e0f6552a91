"""Marking an import's kickouts handled (or reopening them): the form, and the task page's
panel with the state and its history. The record is `ImportSnapshot` (kickouts/queue_models.py)."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest

from .queue_models import HandledReason, ImportSnapshot


class HandledForm(forms.Form):
    reason = forms.ChoiceField(
        choices=[("", "Choose a reason"), *HandledReason.choices], label="Reason"
    )
    note = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}), label="Note"
    )


def panel_context(request: HttpRequest, guid: str) -> dict[str, object]:
    """The task page's handled panel: state, the form or reopen, and the history."""
    snapshot = (
        ImportSnapshot.objects.filter(task_guid=guid.lower()).select_related("handled_by").first()
    )
    if snapshot is None:
        return {}
    return {
        "snapshot": snapshot,
        "handled_form": HandledForm(),
        "can_mark": request.user.has_perm("kickouts.mark_handled"),
        "handled_changes": snapshot.handled_changes.select_related("changed_by")[:20],
    }
