"""Roles are Django's groups and permissions, checked by Django's own ModelBackend."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission


def fresh(user):
    """The same user as the next request loads it: nothing remembered."""
    return type(user).objects.get(pk=user.pk)


@pytest.mark.django_db
def test_a_user_has_her_own_and_her_groups_permissions(clerk):
    """A clerk has AP staff's permissions and her own, not a supervisor's."""
    own = Permission.objects.get(codename="view_all_retries")
    clerk.user_permissions.add(own)
    user = fresh(clerk)
    assert user.has_perm("kickouts.submit_retry")  # from AP staff
    assert user.has_perm("kickouts.view_all_retries")  # her own
    assert not user.has_perm("kickouts.confirm_duplicate_retry")  # a supervisor's


def test_the_dashboard_uses_djangos_own_permission_backend(settings):
    """No hand-written permission query: Django's ModelBackend, as configured by default."""
    assert settings.AUTHENTICATION_BACKENDS == ["django.contrib.auth.backends.ModelBackend"]


@pytest.mark.django_db
def test_a_role_taken_away_counts_on_the_next_request(clerk):
    assert fresh(clerk).has_perm("kickouts.submit_retry")
    clerk.groups.clear()
    assert not fresh(clerk).has_perm("kickouts.submit_retry")


@pytest.mark.django_db
def test_a_permission_taken_from_a_group_counts_on_the_next_request(clerk):
    group = Group.objects.get(name="AP staff")
    group.permissions.remove(Permission.objects.get(codename="submit_retry"))
    assert not fresh(clerk).has_perm("kickouts.submit_retry")


@pytest.mark.django_db
def test_an_inactive_user_has_no_permissions_and_a_superuser_has_all(clerk, django_user_model):
    clerk.is_active = False
    clerk.save()
    assert not fresh(clerk).has_perm("kickouts.submit_retry")
    root = django_user_model.objects.create_superuser("root", password="x" * 12)
    assert fresh(root).get_all_permissions() == {
        f"{p.content_type.app_label}.{p.codename}" for p in Permission.objects.all()
    }
