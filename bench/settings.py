"""Settings for the benchmark servers: the product's settings plus one trivial route.

`python -m bench` serves the dashboard with `DJANGO_SETTINGS_MODULE=bench.settings`, so the
framework floor (`/bench/floor/`) runs behind exactly the product's middleware, in the same
gunicorn worker, without adding a route to the product itself.
"""

from dashboard.settings import *  # noqa: F403
from dashboard.settings import BASE_DIR

ROOT_URLCONF = "bench.floor_urls"
# `collectstatic` for the benchmark writes here, not into the project's staticfiles/.
STATIC_ROOT = BASE_DIR / "bench" / "out" / "staticfiles"
