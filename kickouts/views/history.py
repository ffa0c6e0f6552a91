"""PLACEHOLDER — being written by the history helper; replaced entirely."""

from django.http import HttpResponse

from ..decorators import login_required


@login_required
def history(request):
    return HttpResponse("history: not built yet", status=501)


@login_required
def history_csv(request):
    return HttpResponse("history csv: not built yet", status=501)
