"""The two roles and their permissions (the 0002 migration creates them the same way)."""

from __future__ import annotations

ROLES = {
    "AP staff": ["submit_retry", "mark_handled"],
    "Supervisors": [
        "submit_retry",
        "view_all_retries",
        "confirm_duplicate_retry",
        "view_retryattempt",
        "mark_handled",
        "reconcile_retry",
    ],
}


def ensure_roles(group_model=None, permission_model=None) -> dict:
    """Create the role groups with exactly their permissions; idempotent."""
    if group_model is None:
        from django.contrib.auth.models import Group as group_model
        from django.contrib.auth.models import Permission as permission_model
    groups = {}
    for name, codenames in ROLES.items():
        group, _ = group_model.objects.get_or_create(name=name)
        group.permissions.set(
            permission_model.objects.filter(
                content_type__app_label="kickouts", codename__in=codenames
            )
        )
        groups[name] = group
    return groups
