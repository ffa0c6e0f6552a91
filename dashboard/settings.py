"""Settings for the kickouts dashboard, all read from the environment.

Every variable is listed and explained in `.env.example`. Unset values give a
safe local set-up: the built-in EnergyCAP sandbox and a SQLite file.
"""

import hashlib
import os
import tempfile
from pathlib import Path

import dj_database_url
import django_stubs_ext
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

# Django's generic classes (Paginator[T], ...) as django-stubs types them, also at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}.")


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    try:
        return float(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds, not {value!r}.") from None


DEBUG = env_bool("DEBUG", default=False)

# --- EnergyCAP -------------------------------------------------------------
# An unset base URL means the built-in sandbox (kickouts/sandbox), a separate
# process on loopback; `manage.py rundashboard` starts it.
ENERGYCAP_SANDBOX_PORT = int(os.environ.get("ENERGYCAP_SANDBOX_PORT", "8765"))
ENERGYCAP_SANDBOX_KEY = "sandbox-key"
ENERGYCAP_USES_SANDBOX = not os.environ.get("ENERGYCAP_BASE_URL", "").strip()
ENERGYCAP_BASE_URL = (
    os.environ.get("ENERGYCAP_BASE_URL", "").strip().rstrip("/")
    or f"http://127.0.0.1:{ENERGYCAP_SANDBOX_PORT}"
)
ENERGYCAP_API_KEY = os.environ.get("ENERGYCAP_API_KEY", "").strip()
ENERGYCAP_CONNECT_TIMEOUT = env_float("ENERGYCAP_CONNECT_TIMEOUT", 3.05)
ENERGYCAP_READ_TIMEOUT = env_float("ENERGYCAP_READ_TIMEOUT", 20.0)
# GETs are retried on connection errors, 429 and 502-504; a Retry-After longer
# than this is not waited for: the user gets a clear "try later" instead.
ENERGYCAP_MAX_RETRY_AFTER = env_float("ENERGYCAP_MAX_RETRY_AFTER", 10.0)
ENERGYCAP_GET_ATTEMPTS = int(os.environ.get("ENERGYCAP_GET_ATTEMPTS", "3"))
# EnergyCAP does not say which zone its offset-less date-times are in.
ENERGYCAP_TIME_ZONE = os.environ.get("ENERGYCAP_TIME_ZONE", "UTC")
# Seconds between status panel polls, and how long a panel keeps polling.
STATUS_POLL_SECONDS = env_float("STATUS_POLL_SECONDS", 3.0)
STATUS_POLL_CAP_SECONDS = env_float("STATUS_POLL_CAP_SECONDS", 30 * 60)
# The worker follows a retry's new task until it ends, or for at most this long.
FOLLOW_UP_MAX_SECONDS = env_float("FOLLOW_UP_MAX_SECONDS", 24 * 3600)
# The most imports one bulk retry sends.
BULK_RETRY_MAX = int(os.environ.get("BULK_RETRY_MAX", "100"))
# /health/ready/ answers 503 when a task has waited longer than this for a worker.
WORKER_STALE_SECONDS = env_float("WORKER_STALE_SECONDS", 120)
# The dashboard's address as people reach it: the links in emails.
DASHBOARD_URL = os.environ.get("DASHBOARD_URL", "http://127.0.0.1:8000").strip().rstrip("/")
# Corrected files (kickouts/uploads.py): the largest file the dashboard takes, and the most a
# ZIP or workbook may unpack to (what the checks read is bounded by it).
CORRECTED_FILE_MAX_BYTES = int(os.environ.get("CORRECTED_FILE_MAX_BYTES", str(10 * 1024 * 1024)))
CORRECTED_FILE_MAX_EXPANDED_BYTES = int(
    os.environ.get("CORRECTED_FILE_MAX_EXPANDED_BYTES", str(100 * 1024 * 1024))
)
# A reviewed corrected file is stored until it is sent; one never sent is deleted after this
# many hours (kickouts/corrected_file_models.py, `prune_unsent`). Sent files stay with their
# retry record.
CORRECTED_FILE_UNSENT_HOURS = env_float("CORRECTED_FILE_UNSENT_HOURS", 24)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not DEBUG:
    missing = [
        name
        for name, value in (("SECRET_KEY", SECRET_KEY), ("ENERGYCAP_API_KEY", ENERGYCAP_API_KEY))
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(
            f"DEBUG is off, so {' and '.join(missing)} must be set (see .env.example)."
        )
if not SECRET_KEY:
    SECRET_KEY = "django-insecure-local-development-only"  # noqa: S105 - DEBUG only
if not ENERGYCAP_API_KEY and ENERGYCAP_USES_SANDBOX:
    ENERGYCAP_API_KEY = ENERGYCAP_SANDBOX_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",  # the history's trigram index (migration 0005); inert elsewhere
    "django_htmx",
    "template_partials",
    "django_tasks",
    "django_tasks_db",
    "kickouts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, so its 400 passes back through the security headers above.
    "kickouts.middleware.RefuseNulCharacters",
]

ROOT_URLCONF = "dashboard.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "kickouts.context_processors.energycap",
                "kickouts.context_processors.decisions_waiting",
                "kickouts.context_processors.back_to_group",
            ],
        },
    },
]

WSGI_APPLICATION = "dashboard.wsgi.application"

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Tests on a file, not SQLite's shared-cache memory database: concurrent writers
    # then wait for each other (as in production) instead of failing at once.
    # One file per checkout, in the system's temporary folder.
    # A transaction takes the write lock when it begins, waiting up to 20 s for another
    # process's: one that read first and wrote later would fail at once ("database is
    # locked") when the worker wrote in between (Django's advice for SQLite, 5.1+).
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}
    _checkout = hashlib.sha256(str(BASE_DIR).encode()).hexdigest()[:12]
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"kickouts-test-{_checkout}.sqlite3")
    }

REDIS_URL = os.environ.get("REDIS_URL", "").strip()
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "kickouts",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Background work ---------------------------------------------------------
# Django's Tasks framework (the django-tasks backport; `django.tasks` from Django 6 on).
# The queue lives in the dashboard's own database; `manage.py db_worker` runs it
# (`make run` starts one). Each task sits in the module whose work it does.
TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default"],
    }
}

# --- Email ---------------------------------------------------------------------
# Django's own settings, from the environment. With DEBUG on (make run) emails are printed
# to the terminal; otherwise they go to the SMTP server below.
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# A worker never waits on a silent mail server for ever.
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10)
# For the file backend (django.core.mail.backends.filebased.EmailBackend) only.
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", "") or None
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Kickouts dashboard <kickouts@localhost>")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Sessions read from the cache (Redis when shared), written through to the database.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

LOGIN_URL = "login"
# The day starts on the kickout queue (README, "The day's work starts on Kickouts").
LOGIN_REDIRECT_URL = "queue"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
# The zone pages show times in when the browser does not localise them.
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Uploaded corrected files (STORAGES["default"]): local files here unless another backend is
# configured; they are never served from a URL of their own, only by a permission-checked view.
MEDIA_ROOT = os.environ.get("MEDIA_ROOT", "").strip() or str(BASE_DIR / "var" / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Security headers and cookies --------------------------------------------
# htmx is configured (meta htmx-config in base.html) to need neither inline
# styles nor eval, so scripts and styles come from our own origin only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "form-action": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
    }
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Load balancers probe health over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^health/"]
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "{levelname} {name} {message}", "style": "{"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"urllib3": {"level": "WARNING"}},
}

# --- Error reports -------------------------------------------------------------
# Optional. Reports carry no personal data or local variables, and the API key's
# value is scrubbed from every event (dashboard/sentry.py).
SENTRY_DSN = os.environ.get("SENTRY_DSN", "").strip()
if SENTRY_DSN:
    from .sentry import init_sentry

    init_sentry(SENTRY_DSN, ENERGYCAP_API_KEY)
