"""Shared fixtures: a real sandbox process over HTTP, and users named by their role."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client, override_settings

from kickouts.roles import ensure_roles
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
    # Test users need no slow password hashing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    control = SandboxControl(sandbox_process.url)
    control.reset()
    cache.clear()
    yield control
    cache.clear()


@pytest.fixture(autouse=True)
def media_root(tmp_path):
    """Uploads (corrected files) are stored in the test's own folder. Not through the
    `settings` fixture: some tests parametrize an argument of that name."""
    with override_settings(MEDIA_ROOT=str(tmp_path / "media")):
        yield tmp_path / "media"


@pytest.fixture
def roles(db) -> dict:
    """The role groups by name. A transactional test's flush deletes what migrations made,
    so they are made again here, exactly as the data migration makes them."""
    return ensure_roles()


def _user(django_user_model, username: str, full_name: str, group: str | None):
    first, _, last = full_name.partition(" ")
    user = django_user_model.objects.create_user(
        username=username, password=PASSWORD, first_name=first, last_name=last
    )
    if group:
        user.groups.add(ensure_roles()[group])
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


def signed_in_client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def clerk_client(clerk):
    return signed_in_client(clerk)


@pytest.fixture
def supervisor_client(supervisor):
    return signed_in_client(supervisor)


@pytest.fixture
def outsider_client(outsider):
    return signed_in_client(outsider)
