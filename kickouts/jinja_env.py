"""The Jinja2 environment of the long tables' row templates (settings.TEMPLATES)."""

from jinja2 import Environment, pass_context

from . import formatting


@pass_context
def task_url(context, guid) -> str:
    # `{% jinja_rows %}` reads the script prefix once for the whole table.
    return formatting.task_url(guid, context.get("script_prefix"))


@pass_context
def retry_url(context, pk) -> str:
    return formatting.retry_url(pk, context.get("script_prefix"))


def environment(**options) -> Environment:
    # Always escaped (Django's backend asks for it too): rows carry text from EnergyCAP.
    options.pop("autoescape", None)
    env = Environment(autoescape=True, **options)
    env.filters.update(
        task_url=task_url,
        retry_url=retry_url,
        truncate_chars=formatting.truncate_chars,
        # Filters, not globals: Jinja2 calls a filter directly, a global through Context.call.
        local_time=formatting.local_time,
        status_badge=formatting.status_badge,
        bill_counts=formatting.bill_counts,
    )
    return env
