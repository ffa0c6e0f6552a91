"""The Jinja2 environment of the long tables' row templates (settings.TEMPLATES)."""

from jinja2 import Environment

from . import formatting


def environment(**options) -> Environment:
    # Always escaped (Django's backend asks for it too): rows carry text from EnergyCAP.
    options.pop("autoescape", None)
    env = Environment(autoescape=True, **options)
    env.filters.update(
        task_url=formatting.task_url,
        retry_url=formatting.retry_url,
        truncate_chars=formatting.truncate_chars,
    )
    env.globals.update(local_time=formatting.local_time, status_badge=formatting.status_badge)
    return env
