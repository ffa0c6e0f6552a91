"""The signed-in user's own page: "Your settings"."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .. import weekly
from ..decorators import login_required
from ..models import UserSettings
from .tasks import HtmxHttpRequest


class UserSettingsForm(forms.ModelForm):
    class Meta:
        model = UserSettings
        fields = ["email_when_retry_ends", "weekly_summary"]
        labels = {
            "email_when_retry_ends": "Email me when a retry I asked for ends",
            "weekly_summary": "Email me a summary of the team's kickouts every Monday",
        }

    def __init__(self, *args, supervisor: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if not supervisor:
            del self.fields["weekly_summary"]  # a supervisor's email (kickouts/weekly.py)


@require_http_methods(["GET", "POST"])
@login_required
def user_settings(request: HtmxHttpRequest) -> HttpResponse:
    """GET: the user's settings. POST: save them."""
    instance = UserSettings.of(request.user)
    # An unticked box sends nothing at all: a POST is bound even when empty.
    data = request.POST if request.method == "POST" else None
    supervisor = request.user.has_perm("kickouts.view_all_retries")
    form = UserSettingsForm(data, instance=instance, supervisor=supervisor)
    if request.method == "POST" and form.is_valid():
        form.save()
        if supervisor and form.cleaned_data["weekly_summary"]:
            weekly.wake()
        messages.success(request, "Your settings were saved.")
        return redirect("user_settings")
    return render(request, "kickouts/settings.html", {"form": form})
