"""Settings for every stack, read from environment variables."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import environ

from lightfast_cloud.data_dir import data_dir_secure, sqlite_file_create

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DATA_DIR = Path(env.str("LIGHTFAST_DATA_DIR", default=str(BASE_DIR / "var"))).resolve()
# 0700, its files 0600: the database, secret key and redis live here (lightfast_cloud/data_dir.py).
data_dir_secure(DATA_DIR)


def _secret_key_from_data_dir(data_dir: Path) -> str:
    """Read the generated secret key, creating it atomically on first run."""
    path = data_dir / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        key = secrets.token_urlsafe(50)
        handle.write(key)
    return key


SECRET_KEY = env.str("SECRET_KEY", default="") or _secret_key_from_data_dir(DATA_DIR)
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI and ReDoc served from the platform's own static files (no CDN).
    "drf_spectacular_sidecar",
    "channels",
    "lightfast_cloud",
    "organizations",
    "agents",
    "execution",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files from STATIC_ROOT (collectstatic at `make setup`): hashed names, gzip, far-future caching.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # CORS for browser pages on the organizations' allowed origins; outside the JSON error layer so
    # error responses carry the CORS headers too.
    "organizations.cors.CorsMiddleware",
    # Outermost after security: JSON errors under /api/ for whatever the layers below raise or answer.
    "lightfast_cloud.api_errors.ApiErrorMiddleware",
    # A NUL (or unpaired surrogate) in the path or query string: 400 before any view looks it up.
    "lightfast_cloud.api_input.RequestTextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Content-Security-Policy on the dashboard's pages.
    "dashboard.middleware.DashboardSecurityHeadersMiddleware",
]

ROOT_URLCONF = "lightfast_cloud.urls"
ASGI_APPLICATION = "lightfast_cloud.asgi.application"

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
                "dashboard.context_processors.dashboard",
            ],
        },
    },
]

# --- database -------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'lightfast.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server, the worker and the tests read while one writes;
    # IMMEDIATE takes the write lock up front so concurrent writers queue on
    # the busy timeout instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        # Processes that write runs checkpoint the WAL in a thread of their own, outside the
        # write gate (execution/events.py); SQLite's own checkpoint in a commit stays the backstop.
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=10000;"
        ),
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
    # Created 0600 before SQLite creates it with the umask; its -wal and -shm files take its mode.
    sqlite_file_create(str(DATABASES["default"]["NAME"]))
    # A thread keeps its connection (a web process's request threads, a thread of the worker's pool):
    # opening one costs more CPU than a run's statements (init_command, Django's SQL functions),
    # and a local file has no server side to go stale.
    DATABASES["default"]["CONN_MAX_AGE"] = None
else:
    # Under ASGI every concurrent request runs in a thread of its own, and Celery's thread pool
    # holds hundreds of runs: without a pool each opens its own connection and a burst exhausts
    # PostgreSQL's max_connections. The pool bounds them per process; callers wait for a free one.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # The pool checks a connection before handing it out (one empty query): after the server
    # restarted or a network fault reset its sockets, an idle pooled connection is dead and, unchecked,
    # the first request to draw it would fail with a 503 although the database is back.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=20),
        "timeout": env.float("DATABASE_POOL_TIMEOUT_S", default=30.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis: broker, cache and channel layer share one server ----------------
REDIS_SOCKET = DATA_DIR / "redis.sock"
REDIS_URL = env.str("REDIS_URL", default=f"unix://{REDIS_SOCKET}")
# True when the launcher (or the test suite) must start the private redis.
REDIS_EMBEDDED = "REDIS_URL" not in os.environ


def celery_broker_url(redis_url: str) -> str:
    """Kombu spells a unix-socket redis URL `redis+socket://PATH`."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return redis_url


CACHES = {
    "default": {
        "BACKEND": "lightfast_cloud.cache.ProcessRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "lf",
        "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
    }
}

CHANNEL_LAYERS = {
    "default": {
        # Pub/sub delivers a notification; the database holds every event, so
        # a dropped notification is recovered by reading RunEvents after seq.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "max_connections": 1000}]},
    }
}

SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# --- celery ------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=celery_broker_url(REDIS_URL))
# Celery's Django fixup closes the database connection before and after every task unless this
# is set. On SQLite the threads keep theirs (see CONN_MAX_AGE); with PostgreSQL's pool a task
# must give its connection back, since the worker has more threads than the pool connections.
CELERY_DB_REUSE_MAX = 1000 if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" else None
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "agents.tasks.*": {"queue": "introspect"},
    "execution.tasks.execute_run": {"queue": "runs"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# No ack emulation: kombu's redis transport would copy every delivered message into an "unacked"
# hash and sorted set and remove it again at the ack (two MULTI/EXEC round trips, about a third of
# a worker's CPU per run), to redeliver it an hour later if the worker died. The database already
# is the record: a run whose message was lost is enqueued again by the queued-run reaper within
# LIGHTFAST_RUN_REQUEUE_S, a run whose worker died mid-run is retried or failed by the stale-run
# reaper, introspection has its own (docs/architecture.md "Failure handling"). The prefetch
# (multiplier 1 x the pool's threads) never holds a message no thread is running, so a warm
# shutdown loses none.
CELERY_BROKER_TRANSPORT_OPTIONS = {"ack_emulation": False}

# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "lightfast_cloud.openapi.LightfastAutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["lightfast_cloud.api_input.StrictJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First, so that missing credentials answer 401 with `WWW-Authenticate: Bearer`.
        "organizations.authentication.ApiKeyAuthentication",
        "organizations.authentication.MemberSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "lightfast_cloud.api_errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Lightfast Cloud API",
    "DESCRIPTION": "Upload Lightfast agent bundles and run them in a sandbox.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from drf-spectacular-sidecar's static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # 3.1: a nullable reference is `oneOf: [{$ref}, {type: "null"}]`, which 3.0 cannot express
    # (`nullable` beside `allOf: [{$ref}]` still validates null against the referenced schema).
    "OAS_VERSION": "3.1.0",
    # Relative: the API is served by whichever host serves the schema.
    "SERVERS": [{"url": "/", "description": "This Lightfast Cloud deployment"}],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "lightfast_cloud.openapi.schema_postprocess",
    ],
    # Named choice sets, so fields called `status`, `role`… in different apps do not collide.
    "ENUM_NAME_OVERRIDES": {
        "ApiKeyStatusEnum": "organizations.models.API_KEY_STATUSES",
        "RoleEnum": "organizations.models.Role",
        "ScopeEnum": "organizations.models.Scope",
        "RunStatusEnum": "execution.models.RunStatus",
    },
}
# Request bodies above this size get a 413 (uploads stream with their own limit).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("LIGHTFAST_MAX_JSON_BODY", default=1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Stored bundles are private to the platform's user (Django's default would make them 0644).
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
# Hard cap on any request body, enforced in ASGI before Django spools it to disk;
# per-organization bundle limits (at most this) are checked while streaming.
LIGHTFAST_MAX_REQUEST_BYTES = env.int("LIGHTFAST_MAX_REQUEST_BYTES", default=64 * 1024 * 1024)
# Long-lived threads per web process for the synchronous part of HTTP requests (views, middleware,
# database reads of live streams); a request uses the least busy one (lightfast_cloud/asgi_handler.py).
LIGHTFAST_WEB_THREADS = env.int("LIGHTFAST_WEB_THREADS", default=8)

# --- sandbox ------------------------------------------------------------------
LIGHTFAST_SANDBOX_BACKEND = env.str("LIGHTFAST_SANDBOX_BACKEND", default="local")
LIGHTFAST_SANDBOX_WORKERS = env.int("LIGHTFAST_SANDBOX_WORKERS", default=os.cpu_count() or 2)
# Refuse to start the local jail when a layer (seccomp, netns, uid drop) is missing.
LIGHTFAST_SANDBOX_REQUIRE_ALL_LAYERS = env.bool("LIGHTFAST_SANDBOX_REQUIRE_ALL_LAYERS", default=False)

# --- static, media, i18n --------------------------------------------------------
STATIC_URL = "static/"
# Outside the data dir: `make setup` collects once for every data dir (tests collect their own).
STATIC_ROOT = Path(env.str("LIGHTFAST_STATIC_ROOT", default=str(BASE_DIR / "var" / "static"))).resolve()
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Content-hashed names from the manifest collectstatic writes, and gzip copies WhiteNoise serves.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
MEDIA_ROOT = Path(env.str("LIGHTFAST_MEDIA_ROOT", default=str(DATA_DIR / "media")))
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
# Password-reset mail: printed to the console unless a real backend is configured (README).
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Lightfast Cloud <noreply@localhost>")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # Celery's two lines per task ("received", "succeeded in"): at hundreds of runs a second they
    # cost the worker more CPU than a run's own bookkeeping, and every run has its own record (its
    # status, events, timings). LIGHTFAST_LOG_TASKS=1 brings them back.
    "loggers": {
        name: {"level": "INFO" if env.bool("LIGHTFAST_LOG_TASKS", default=False) else "WARNING"}
        for name in ("celery.worker.strategy", "celery.app.trace")
    },
}

# --- runs and model providers (mapping rule: execution/providers/__init__.py) ----
# Without a base URL every bundle model is answered by the offline `demo` model.
LIGHTFAST_MODEL_BASE_URL = env.str("LIGHTFAST_MODEL_BASE_URL", default="")
LIGHTFAST_MODEL_API_KEY = env.str("LIGHTFAST_MODEL_API_KEY", default="")
# JSON: bundle model id -> provider model id; "*" for unmapped ids; "demo" selects the demo model.
LIGHTFAST_MODEL_MAP = env.json("LIGHTFAST_MODEL_MAP", default={})
LIGHTFAST_MODEL_TIMEOUT_S = env.float("LIGHTFAST_MODEL_TIMEOUT_S", default=60.0)
LIGHTFAST_MODEL_MAX_RETRIES = env.int("LIGHTFAST_MODEL_MAX_RETRIES", default=3)
LIGHTFAST_MODEL_RETRY_BACKOFF_S = env.float("LIGHTFAST_MODEL_RETRY_BACKOFF_S", default=0.5)
# Platform cap on model steps per run (a bundle's stopWhen step count can only lower it).
LIGHTFAST_RUN_MAX_STEPS = env.int("LIGHTFAST_RUN_MAX_STEPS", default=20)
# Chat: a live stream that has nothing to send for this long sends a keep-alive (an SSE comment
# line, a websocket `{"type": "ping"}` frame), so proxies with idle timeouts keep it open.
LIGHTFAST_STREAM_KEEPALIVE_S = env.float("LIGHTFAST_STREAM_KEEPALIVE_S", default=15.0)
# Chat: the most messages a chat session may hold (what is stored and sent to the model), and the
# largest chat request body (the AI SDK posts the whole conversation on every turn).
LIGHTFAST_CHAT_MAX_MESSAGES = env.int("LIGHTFAST_CHAT_MAX_MESSAGES", default=2000)
LIGHTFAST_CHAT_MAX_REQUEST_BYTES = env.int("LIGHTFAST_CHAT_MAX_REQUEST_BYTES", default=32 * 1024 * 1024)
# Workers write each held run's heartbeat this often; the reaper fails running runs whose
# heartbeat is older than LIGHTFAST_RUN_STALE_S (their worker died).
LIGHTFAST_RUN_HEARTBEAT_S = env.float("LIGHTFAST_RUN_HEARTBEAT_S", default=5.0)
LIGHTFAST_RUN_STALE_S = env.float("LIGHTFAST_RUN_STALE_S", default=30.0)
# A lost run that had not started a tool call is queued again, up to this many attempts in all;
# after a tool call started (it may have had effects), or on the last attempt, it fails `worker_lost`.
LIGHTFAST_RUN_MAX_ATTEMPTS = env.int("LIGHTFAST_RUN_MAX_ATTEMPTS", default=3)
# Each Celery worker publishes its sandbox pool's status for /healthz this often (it expires after 45 s).
LIGHTFAST_WORKER_STATUS_EVERY_S = env.float("LIGHTFAST_WORKER_STATUS_EVERY_S", default=10.0)
# A run no worker claimed within LIGHTFAST_RUN_REQUEUE_S of being enqueued is enqueued again (the
# broker may have lost its task; a duplicate finds it claimed and does nothing); one still queued
# LIGHTFAST_RUN_QUEUED_MAX_S after it was created fails with `worker_lost` and frees its slot.
LIGHTFAST_RUN_REQUEUE_S = env.float("LIGHTFAST_RUN_REQUEUE_S", default=60.0)
LIGHTFAST_RUN_QUEUED_MAX_S = env.float("LIGHTFAST_RUN_QUEUED_MAX_S", default=900.0)
CELERY_BEAT_SCHEDULE = {
    "execution-reap-runs": {
        "task": "execution.tasks.reap_runs",
        "schedule": env.float("LIGHTFAST_RUN_REAP_INTERVAL_S", default=10.0),
    },
    # Bundle versions whose introspection crashed or was never queued (agents/tasks.py).
    "agents-reap-introspections": {"task": "agents.tasks.reap_stale_introspections", "schedule": 60.0},
}

# --- rate limits and quotas (organizations/ratelimits.py, organizations/quotas.py) ----------
# django-ratelimit counts in the shared Redis cache; a broken counter is a refusal, never a pass.
RATELIMIT_USE_CACHE = "default"
RATELIMIT_FAIL_OPEN = False
# Redis unreachable: API reads (GET/HEAD/OPTIONS) pass unlimited when true; otherwise every request is a 503.
LIGHTFAST_RATELIMIT_FAIL_OPEN_READS = env.bool("LIGHTFAST_RATELIMIT_FAIL_OPEN_READS", default=False)
# How many reverse proxies in front of the app append to X-Forwarded-For (0: use the socket address).
LIGHTFAST_TRUSTED_PROXY_COUNT = env.int("LIGHTFAST_TRUSTED_PROXY_COUNT", default=0)
# Dashboard sign-in attempts per client IP and per email, and sign-ups per client IP (django-ratelimit).
LIGHTFAST_LOGIN_RATE = env.str("LIGHTFAST_LOGIN_RATE", default="10/m")
LIGHTFAST_SIGNUP_RATE = env.str("LIGHTFAST_SIGNUP_RATE", default="20/h")
# Failed authentications allowed per client IP (REST, SSE and websockets alike).
LIGHTFAST_AUTH_FAILURE_RATE = env.str("LIGHTFAST_AUTH_FAILURE_RATE", default="30/m")
# Open websockets and SSE streams re-check their credentials this often even when no revocation
# message reached them (they are told at once otherwise; execution.credential_watch.CredentialWatch).
LIGHTFAST_CREDENTIAL_RECHECK_S = env.float("LIGHTFAST_CREDENTIAL_RECHECK_S", default=5.0)
# Platform maximums of the per-run limits an operator may give an organization (wall stays below
# the broker visibility timeout so a long run is never redelivered).
LIGHTFAST_MAX_RUN_CPU_MS = env.int("LIGHTFAST_MAX_RUN_CPU_MS", default=600_000)
LIGHTFAST_MAX_RUN_MEMORY_BYTES = env.int("LIGHTFAST_MAX_RUN_MEMORY_BYTES", default=1024 * 1024 * 1024)
LIGHTFAST_MAX_RUN_WALL_MS = env.int("LIGHTFAST_MAX_RUN_WALL_MS", default=3_000_000)
