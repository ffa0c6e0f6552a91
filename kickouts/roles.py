"""The two roles and their permissions (the 0002 migration creates them the same way)."""

from __future__ import annotations

AP_STAFF = "AP staff"
SUPERVISORS = "Supervisors"

# Each role's group name and its permissions: the one list of roles.
ROLES = {
    AP_STAFF: ["submit_retry", "mark_handled"],
    SUPERVISORS: [
        "submit_retry",
        "view_all_retries",
        "confirm_duplicate_retry",
        "view_retryattempt",
        "mark_handled",
        "reconcile_retry",
    ],
}


# `manage.py adduser --role …`: each role by its command-line name (none: no role).
ROLE_OPTIONS: dict[str, str | None] = {
    "ap-staff": AP_STAFF,
    "supervisor": SUPERVISORS,
    "none": None,
}


def in_words(joiner: str = "or") -> str:
    """The roles' names for a sentence: "AP staff or Supervisors"."""
    return f" {joiner} ".join(ROLES)


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
