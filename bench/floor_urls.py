"""The product's URLs plus the framework floor: the cheapest response Django can give."""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.http import require_GET

from kickouts.decorators import login_required


@require_GET
def floor(request: HttpRequest) -> HttpResponse:
    """Nothing but the middleware stack: no session read, no query, no template."""
    return HttpResponse("ok", content_type="text/plain")


@require_GET
@login_required
def signed_in_floor(request: HttpRequest) -> HttpResponse:
    """The floor plus what every product page pays first: the session and the user."""
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("bench/floor/", floor, name="bench_floor"),
    path("bench/floor/signed-in/", signed_in_floor, name="bench_signed_in_floor"),
    path("", include("dashboard.urls")),
]
