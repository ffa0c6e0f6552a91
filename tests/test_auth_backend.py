"""The permission backend: Django's rules, read in one query."""

from __future__ import annotations

import pytest
from django.contrib.auth import backends
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from kickouts.auth_backends import ModelBackend


def fresh(user):
    """The same user as the next request loads it: nothing remembered."""
    return type(user).objects.get(pk=user.pk)


@pytest.mark.django_db
def test_a_user_has_her_own_and_her_groups_permissions_read_in_one_query(clerk):
    own = Permission.objects.get(codename="view_all_retries")
    clerk.user_permissions.add(own)
    user = fresh(clerk)
    with CaptureQueriesContext(connection) as queries:
        perms = ModelBackend().get_all_permissions(user)
        assert user.has_perm("kickouts.submit_retry")  # from AP staff
        assert user.has_perm("kickouts.view_all_retries")  # her own
    assert len(queries) == 1
    assert perms == backends.ModelBackend().get_all_permissions(fresh(clerk))


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
    assert ModelBackend().get_all_permissions(fresh(root)) == {
        f"{p.content_type.app_label}.{p.codename}" for p in Permission.objects.all()
    }


@pytest.mark.django_db
def test_the_union_is_compiled_once_and_runs_as_the_orm_wrote_it(clerk, supervisor):
    """The SQL is the ORM's own, reused with each user's id; the answers stay per user."""
    from kickouts import auth_backends

    Group.objects.get(name="AP staff").user_set.add(supervisor)
    supervisor.user_permissions.add(Permission.objects.get(codename="view_all_retries"))
    answers = []
    for user in (clerk, supervisor):
        expected = backends.ModelBackend().get_all_permissions(fresh(user))
        answers.append(expected)
        with CaptureQueriesContext(connection) as queries:
            assert ModelBackend().get_all_permissions(fresh(user)) == expected
        (query,) = [q["sql"] for q in queries if "auth_permission" in q["sql"]]
        assert "UNION" in query.upper()
    assert answers[0] != answers[1]
    assert auth_backends._union_sql.cache_info().currsize == 1
