"""Django's ModelBackend, reading a user's permissions in one query instead of two."""

from django.contrib.auth import backends
from django.contrib.auth.models import Permission


class ModelBackend(backends.ModelBackend):
    """Permissions of the user and of the user's groups in one UNION query, per request.

    Every page checks a permission, and the status panel is polled every few seconds by
    everyone watching a retry: Django's two queries were a fifth of that panel's time
    (bench/results.md). Nothing is kept between requests, so a role taken away counts at
    once, as with Django's own backend.
    """

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            user_obj._perm_cache = {f"{app}.{codename}" for app, codename in _rows(user_obj)}
        return user_obj._perm_cache


def _rows(user):
    columns = ("content_type__app_label", "codename")
    if user.is_superuser:
        return Permission.objects.values_list(*columns).order_by()
    own = Permission.objects.filter(user=user).values_list(*columns).order_by()
    via_groups = Permission.objects.filter(group__user=user).values_list(*columns).order_by()
    return own.union(via_groups)
