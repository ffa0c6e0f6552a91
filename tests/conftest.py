"""Shared fixtures: a real sandbox process over HTTP, and users named by their role."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache

from kickouts.sandbox.control import SandboxControl
from kickouts.sandbox.process import start_sandbox

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="session")
def sandbox_process():
    """One EnergyCAP sandbox for the whole run: a separate process on loopback."""
    import os

    with start_sandbox(port=0, api_key=os.environ["ENERGYCAP_API_KEY"], task_seconds=2.0) as proc:
        yield proc


@pytest.fixture(autouse=True)
def sandbox(sandbox_process, settings) -> SandboxControl:
    """Every test starts from fresh seed data, no faults, an empty request log and cache."""
    settings.ENERGYCAP_BASE_URL = sandbox_process.url
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    control = SandboxControl(sandbox_process.url)
    control.reset()
    cache.clear()
    yield control
    cache.clear()


def _user(django_user_model, username: str, full_name: str, group: str | None):
    first, _, last = full_name.partition(" ")
    user = django_user_model.objects.create_user(
        username=username, password=PASSWORD, first_name=first, last_name=last
    )
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def clerk(db, django_user_model):
    """Carla, a clerk in AP staff."""
    return _user(django_user_model, "carla", "Carla Clerk", "AP staff")


@pytest.fixture
def other_clerk(db, django_user_model):
    """Oscar, another clerk in AP staff."""
    return _user(django_user_model, "oscar", "Oscar Other", "AP staff")


@pytest.fixture
def supervisor(db, django_user_model):
    """Sam, a supervisor."""
    return _user(django_user_model, "sam", "Sam Supervisor", "Supervisors")


@pytest.fixture
def outsider(db, django_user_model):
    """Nora, signed in but in no group."""
    return _user(django_user_model, "nora", "Nora Nogroup", None)


def _client_for(client_class, user):
    from django.test import Client

    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def clerk_client(clerk):
    return _client_for(None, clerk)


@pytest.fixture
def supervisor_client(supervisor):
    return _client_for(None, supervisor)


@pytest.fixture
def outsider_client(outsider):
    return _client_for(None, outsider)
