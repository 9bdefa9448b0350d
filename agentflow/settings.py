"""AgentFlow settings: one file, driven by the environment (see .env.example).

Development defaults work out of the box; ``AGENTFLOW_ENV=production`` refuses to start
without a strong SECRET_KEY, ALLOWED_HOSTS (no wildcard) and AGENTFLOW_ENCRYPTION_KEYS, and turns
on every deploy-check hardening. A bad value raises one SettingsError naming the variable; the
entry points print it as one line and exit 2 (agentflow.lib.env).
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from kombu import Queue

from agentflow.lib import crypto, logcontext
from agentflow.lib.env import (
    SettingsError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    secret_key_problem,
)
from agentflow.lib.files import secure_data_dir
from scheduler import limits

__all__ = ("env_bool", "env_float", "env_int", "env_list", "env_str")  # the readers, for tests

# Files this process creates (the SQLite database and the -wal/-shm files SQLite makes itself,
# device keys, logs) are readable by the owner only: they hold tokens and keys.
os.umask(0o077)

BASE_DIR = Path(__file__).resolve().parent.parent


# pytest sets PYTEST_VERSION before Django loads, so a bare `pytest` gets test settings.
ENVIRONMENT = env_choice(
    "AGENTFLOW_ENV",
    "test" if "PYTEST_VERSION" in os.environ else "development",
    ("development", "test", "production"),
)
PRODUCTION = ENVIRONMENT == "production"

DATA_DIR = Path(env_str("AGENTFLOW_DATA_DIR", str(BASE_DIR / "var")))
secure_data_dir(DATA_DIR)

DEV_SECRET_KEY = "dev-insecure-" + "x" * 50
SECRET_KEY = env_str("SECRET_KEY")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS")
if PRODUCTION:
    problem = secret_key_problem(SECRET_KEY, DEV_SECRET_KEY)
    if problem:
        raise SettingsError(
            f"SECRET_KEY {problem}; production needs at least 50 random characters, "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(64))'"
        )
    if not ALLOWED_HOSTS:
        raise SettingsError("ALLOWED_HOSTS is required in production (comma-separated host names)")
    if any("*" in host for host in ALLOWED_HOSTS):
        raise SettingsError(
            f"ALLOWED_HOSTS={','.join(ALLOWED_HOSTS)!r}: a wildcard is refused in production; "
            "list the host names the site answers to"
        )
    DEBUG = False
else:
    SECRET_KEY = SECRET_KEY or DEV_SECRET_KEY
    ALLOWED_HOSTS = ALLOWED_HOSTS or ["127.0.0.1", "localhost", "[::1]"]
    DEBUG = env_bool("DEBUG", ENVIRONMENT == "development")

CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_celery_beat",
    "django_htmx",
    "template_partials",
    "axes",  # login throttling: locks a username or an address after repeated failures
    # Lowest layer first (ARCHITECTURE.md): the engine, the domain apps, the UI on top.
    "scheduler",
    "fleet",
    "webhooks",
    "executor",
    "flows",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A bad parameter is a 400 naming it; every error under /api/ is JSON (also with DEBUG on).
    "dashboard.middleware.HttpErrorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Login required everywhere; public views opt out with @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "agentflow.urls"
ASGI_APPLICATION = "agentflow.asgi.application"
WSGI_APPLICATION = None

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
                "dashboard.context_processors.live_updates",
                "dashboard.context_processors.open_alerts",
            ],
        },
    },
]

# --- Database: SQLite in DATA_DIR (WAL, set by init_command below) unless DATABASE_URL is set ---
# Every SQLite connection gets these, also a DATABASE_URL=sqlite:///… one (the tests hand their
# subprocesses the test database that way): without IMMEDIATE a transaction that read first and
# then writes fails at once with "database is locked" when another connection committed
# meanwhile (no busy wait helps), and the queue's claim relies on one writer at a time.
SQLITE_OPTIONS = {
    # WAL + a busy timeout lets readers work while a writer holds the lock;
    # IMMEDIATE avoids the upgrade deadlock of deferred transactions.
    "init_command": (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000; "
        # A 64 MiB page cache and memory-mapped reads: bulk deletes touch index pages
        # all over the file, and the 2 MiB default makes them 10x slower.
        "PRAGMA cache_size=-65536; PRAGMA mmap_size=268435456; PRAGMA temp_store=MEMORY;"
    ),
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    # agentflow/lib/sqlite3: write transactions queue on a file lock that hands over at once
    # (SQLite's busy handler sleeps 1, 2, 5 … ms between looks, so two workers ran as one).
    "writer_lock": env_bool("AGENTFLOW_SQLITE_WRITER_LOCK", True),
}
SQLITE_ENGINE = "agentflow.lib.sqlite3"  # Django's SQLite backend plus that writer lock
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
    if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        DATABASES["default"]["ENGINE"] = SQLITE_ENGINE
        DATABASES["default"]["OPTIONS"] = {**SQLITE_OPTIONS, **DATABASES["default"].get("OPTIONS", {})}
else:
    DATABASES = {
        "default": {
            "ENGINE": SQLITE_ENGINE,
            "NAME": str(DATA_DIR / "agentflow.sqlite3"),
            "OPTIONS": dict(SQLITE_OPTIONS),
            # Kept between requests by each of the web process's AGENTFLOW_WEB_THREADS threads
            # (agentflow/lib/webthreads.py): a new connection cost ~0.8 ms of CPU per request.
            "CONN_MAX_AGE": 60,
        }
    }
if ENVIRONMENT == "test" and DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not :memory:, so the browser tests' Daphne subprocess sees the same data.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The web process's request threads (agentflow/lib/webthreads.py): each serves one request at a
# time and keeps its database connection, so a web process holds at most this many connections.
AGENTFLOW_WEB_THREADS = env_int("AGENTFLOW_WEB_THREADS", 8, minimum=1)

# --- Redis: Celery broker, channel layer, cache (open chat panels, locks, counters) ---
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_PREFIX = env_str("AGENTFLOW_REDIS_PREFIX", "agentflow-test" if ENVIRONMENT == "test" else "agentflow")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_PREFIX,
    }
}
# pubsub (default): RedisPubSubChannelLayer, no per-channel buffer; at 100 pages x 1,000
# deliveries/s it halves the server CPU per delivery and meets the latency targets where core
# does not (bench/README.md). core: RedisChannelLayer, per-channel lists with a capacity
# (AGENTFLOW_CHANNEL_CAPACITY); messages beyond it are dropped. With either, pages detect gaps by
# sequence number, count them on /metrics and re-sync; the polling batches reconcile.
CHANNEL_LAYER = env_choice("AGENTFLOW_CHANNEL_LAYER", "pubsub", ("core", "pubsub"))
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 defaults to a 5 s socket timeout, and the layer blocks 5 s in BRPOP while
            # a consumer waits: an idle page's socket would die every 5 s (channels_redis #422).
            # max_connections: redis-py 8's async pool raises at 100 instead of waiting, which a
            # burst of 100 pages closing at once reached (bench/README.md).
            "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "max_connections": 1000}],
            "prefix": REDIS_PREFIX + ":asgi",
            "capacity": env_int("AGENTFLOW_CHANNEL_CAPACITY", 1000),
            "expiry": 60,
        },
    }
    if CHANNEL_LAYER == "core"
    else {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "max_connections": 1000}],
            "prefix": REDIS_PREFIX + ":asgi",
        },
    }
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
# The queue is named after the Redis prefix, so test runs and benchmarks sharing a Redis with
# a running stack never feed each other's workers.
CELERY_TASK_DEFAULT_QUEUE = REDIS_PREFIX
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# No lost task: a message is acknowledged after its task ran (acks_late), a task whose pool
# process died is requeued (reject_on_worker_lost), and a worker reserves one message at a time.
# A worker whose main process is killed (kill -9) leaves its message unacknowledged on Redis: the
# next worker redelivers it once it is older than the visibility timeout. A redelivered or
# duplicate batch run is harmless: the batch lock skips it while the first still runs, and the
# killed run's BatchRun row is marked lost (scheduler/runner.py). Keep the timeout above the
# longest task you want never to run twice.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A worker keeps its database connection across tasks: Celery's Django fixup closes it around
# every task otherwise, and reopening it (SQLite: open + PRAGMAs) cost ~1.3 ms per queue run.
# The fixup still recycles it every 2 x this many tasks; after each task it is closed when
# unusable or older than CONN_MAX_AGE (agentflow/celery.py, at least 60 s in a worker).
CELERY_DB_REUSE_MAX = env_int("AGENTFLOW_CELERY_DB_REUSE_MAX", 500)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("AGENTFLOW_CELERY_VISIBILITY_TIMEOUT", 900),
    # Look for such abandoned messages every 5 s (kombu's default is every ~100 s).
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
    # Kombu's bookkeeping of unacknowledged messages under our prefix, like the queue: a worker
    # of another stack on the same Redis never redelivers ours (nor we theirs).
    "unacked_key": f"{REDIS_PREFIX}:unacked",
    "unacked_index_key": f"{REDIS_PREFIX}:unacked_index",
    "unacked_mutex_key": f"{REDIS_PREFIX}:unacked_mutex",
}
# The engine's priority queues (scheduler/queue.py): one Celery queue per priority, named after
# the default queue ("agentflow.urgent"…), all consumed by every worker (no -Q needed). Celery is
# only the wake-up: which run starts is chosen in the database.
CELERY_TASK_QUEUES = [
    Queue(name)
    for name in (REDIS_PREFIX, *(f"{REDIS_PREFIX}.{p}" for p in ("urgent", "high", "normal", "low")))
]
# How often the alert rules are evaluated (scheduler.alert_rules, beat's scheduler-alerts entry).
AGENTFLOW_ALERT_INTERVAL_SECONDS = env_float("AGENTFLOW_ALERT_INTERVAL_SECONDS", 10.0, minimum=1.0)
# Schedule triggers: beat's safety-net pass (the precise wake-ups are ETA messages) and how late a
# due time may be fired before it counts as missed (AgentFlow was down: the catch-up policy decides).
AGENTFLOW_SCHEDULE_TICK_SECONDS = env_float("AGENTFLOW_SCHEDULE_TICK_SECONDS", 5.0, minimum=0.5)
AGENTFLOW_SCHEDULE_MISFIRE_SECONDS = env_float("AGENTFLOW_SCHEDULE_MISFIRE_SECONDS", 60.0, minimum=1.0)
# Off: no ETA wake-ups, fires wait for beat's pass (the benchmark's baseline).
AGENTFLOW_SCHEDULE_ARM = env_bool("AGENTFLOW_SCHEDULE_ARM", True)
# The engine's tick (scheduler.tasks.tick): due scheduled runs, lost messages, timeouts, dead workers.
CELERY_BEAT_SCHEDULE = {
    "scheduler-tick": {
        "task": "scheduler.tasks.tick",
        "schedule": env_float("AGENTFLOW_TICK_SECONDS", 2.0),
        "options": {"queue": f"{REDIS_PREFIX}.urgent", "expires": 10},
    },
    # The alert rules (scheduler.alert_rules.evaluate): every few seconds, expiring before the next.
    "scheduler-alerts": {
        "task": "scheduler.tasks.evaluate_alerts",
        "schedule": AGENTFLOW_ALERT_INTERVAL_SECONDS,
        "options": {"queue": f"{REDIS_PREFIX}.urgent", "expires": AGENTFLOW_ALERT_INTERVAL_SECONDS},
    },
    # The webhook delivery log's retention (webhooks.retention.prune).
    "webhooks-prune": {
        "task": "webhooks.tasks.prune_deliveries",
        "schedule": 3600.0,
        "options": {"queue": REDIS_PREFIX, "expires": 600},
    },
    # Schedule triggers (scheduler/triggers/schedule.py): the safety net; each pass also sends one
    # message with an ETA at the next due fire, so fires do not wait for this interval.
    "scheduler-schedules": {
        "task": "scheduler.tasks.fire_schedules",
        "schedule": AGENTFLOW_SCHEDULE_TICK_SECONDS,
        "options": {"queue": f"{REDIS_PREFIX}.urgent", "expires": 30},
    },
    "fleet-provider-probe": {
        "task": "fleet.tasks.probe_providers",
        "schedule": env_float("AGENTFLOW_PROVIDER_PROBE_SECONDS", 180.0),
        "options": {"queue": f"{REDIS_PREFIX}.urgent", "expires": 60},
    },
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Auth ---
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out username or address before any password is hashed.
# (It needs the request, so tests log in with force_login or the real form, not client.login.)
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# How long a web process (or worker) trusts a user's role read from their permissions
# (scheduler/roles.py RoleCache): a change made in this process applies at once, one made in another
# process within this many seconds. 0: read on every check.
AGENTFLOW_ROLE_CACHE_SECONDS = env_float("AGENTFLOW_ROLE_CACHE_SECONDS", 5.0)
# Per username and, separately, per address: either one reaching the limit locks it out.
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_FAILURE_LIMIT = env_int("AGENTFLOW_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AGENTFLOW_LOGIN_COOLOFF_MINUTES", 15))
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_VERBOSE = False  # no startup banner; axes still logs each failure and lockout (without the IP in full)
if ENVIRONMENT == "test":
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Outside production WhiteNoise serves straight from the app/static dirs (no collectstatic needed).
WHITENOISE_USE_FINDERS = not PRODUCTION
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Security: hardened in production, relaxed only for local development ---
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads it via hx-headers rendered server-side; cookie stays SameSite
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # /healthz is probed over plain HTTP by load balancers inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]

ADMINS = [tuple(a.split(":", 1)) if ":" in a else (a, a) for a in env_list("AGENTFLOW_ADMINS")]
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "agentflow@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- AgentFlow ---
# Secrets at rest (gateway tokens, webhook secrets): Fernet keys, comma-separated; the first
# encrypts, all decrypt (rotation: put a new key first, `manage.py rotate_encryption_key`, drop
# the old one). Outside production the default is derived from SECRET_KEY, so `make run` needs no
# setup; production refuses to start without it.
try:
    ENCRYPTION_KEYS = crypto.check_keys(env_list("AGENTFLOW_ENCRYPTION_KEYS"))
except ValueError as exc:
    raise SettingsError(f"AGENTFLOW_ENCRYPTION_KEYS: {exc}") from None
if not ENCRYPTION_KEYS:
    if PRODUCTION:
        raise SettingsError(
            "AGENTFLOW_ENCRYPTION_KEYS is required in production (it encrypts gateway tokens); "
            "generate one with: python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        )
    ENCRYPTION_KEYS = [crypto.derive_key(SECRET_KEY)]

# /metrics: a scraper sends `Authorization: Bearer <AGENTFLOW_METRICS_TOKEN>` or comes from one
# of AGENTFLOW_METRICS_ALLOWED_IPS. With neither set, development answers loopback clients only
# and production answers 403 with how to enable it.
METRICS_TOKEN = env_str("AGENTFLOW_METRICS_TOKEN")
METRICS_ALLOWED_IPS = env_list("AGENTFLOW_METRICS_ALLOWED_IPS")
for _entry in METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_entry, strict=False)
    except ValueError:
        raise SettingsError(
            f"AGENTFLOW_METRICS_ALLOWED_IPS: {_entry!r} is not an address or network "
            "(e.g. 10.0.0.5,10.1.0.0/16)"
        ) from None
GATEWAY_DEVICE_DIR = DATA_DIR / "devices"
GATEWAY_REQUEST_TIMEOUT = env_float("AGENTFLOW_GATEWAY_TIMEOUT", 10.0)
GATEWAY_CONNECT_TIMEOUT = env_float("AGENTFLOW_GATEWAY_CONNECT_TIMEOUT", 10.0)
# Scopes requested at connect. Add operator.admin to allow config edits (config.patch).
GATEWAY_SCOPES = tuple(env_list("AGENTFLOW_GATEWAY_SCOPES", "operator.read,operator.write"))

# Session status thresholds (BATCH-001): activity within ACTIVE seconds -> active, IDLE -> idle.
AGENTFLOW_SESSION_ACTIVE_SECONDS = env_int("AGENTFLOW_SESSION_ACTIVE_SECONDS", 60)
AGENTFLOW_SESSION_IDLE_SECONDS = env_int("AGENTFLOW_SESSION_IDLE_SECONDS", 300)
# History retention (BATCH-004).
AGENTFLOW_CONFIG_RETENTION_DAYS = env_int("AGENTFLOW_CONFIG_RETENTION_DAYS", 30)
AGENTFLOW_CHAT_RETENTION_DAYS = env_int("AGENTFLOW_CHAT_RETENTION_DAYS", 7)
AGENTFLOW_BATCH_RUN_RETENTION_DAYS = env_int("AGENTFLOW_BATCH_RUN_RETENTION_DAYS", 7)
# A batch run's no-overlap lock lives this long past its worker's last heartbeat (renewed every
# third of it): a killed worker blocks the next run for at most this, and its run is marked lost.
AGENTFLOW_BATCH_LEASE_SECONDS = env_int("AGENTFLOW_BATCH_LEASE_SECONDS", 6)
# --- The execution queue (scheduler/queue.py, scheduler/README.md) ---
# Runs at once per gateway (below the gateway's own lane of 8) and per agent of a gateway.
AGENTFLOW_GATEWAY_CONCURRENCY = env_int("AGENTFLOW_GATEWAY_CONCURRENCY", 6)
AGENTFLOW_AGENT_CONCURRENCY = env_int("AGENTFLOW_AGENT_CONCURRENCY", 2)
# Retries of server errors, timeouts and unreachable gateways: full jitter, base * 2^(n-1) capped.
AGENTFLOW_RETRY_BASE_SECONDS = env_float("AGENTFLOW_RETRY_BASE_SECONDS", 10.0)
AGENTFLOW_RETRY_CAP_SECONDS = env_float("AGENTFLOW_RETRY_CAP_SECONDS", 300.0)
# A rate-limited run waits this long unless the limiter (scheduler.errors hook) says otherwise.
AGENTFLOW_RATE_LIMIT_WAIT_SECONDS = env_float("AGENTFLOW_RATE_LIMIT_WAIT_SECONDS", 60.0)
# A queued run this old with no worker on it gets a fresh dispatch message from the tick.
AGENTFLOW_REDISPATCH_AFTER_SECONDS = env_float("AGENTFLOW_REDISPATCH_AFTER_SECONDS", 5.0)
AGENTFLOW_REDISPATCH_MAX = env_int("AGENTFLOW_REDISPATCH_MAX", 20)
# Coalesced wake-ups (scheduler/queue.py ``wake_up``), on by default: a run's wake-up is sent only
# while fewer than N (2) messages wait in its priority's Celery queue, and each dispatch task
# starts runs until none is eligible (for at most AGENTFLOW_DISPATCH_DRAIN_SECONDS, then it sends
# itself again), so a burst costs a few messages. 0: one dispatch message per queued run, each
# starting one run.
# POST /api/v1/runs/ with {"runs": […]}: at most this many runs in one request (one transaction).
AGENTFLOW_API_BULK_MAX = env_int("AGENTFLOW_API_BULK_MAX", 1000)
AGENTFLOW_DISPATCH_PENDING_MAX = env_int("AGENTFLOW_DISPATCH_PENDING_MAX", 2)
AGENTFLOW_DISPATCH_DRAIN_SECONDS = env_float("AGENTFLOW_DISPATCH_DRAIN_SECONDS", 1.0)
# A running run past its timeout plus this grace is reconciled, then timed out.
AGENTFLOW_RUN_TIMEOUT_GRACE_SECONDS = env_int("AGENTFLOW_RUN_TIMEOUT_GRACE_SECONDS", 30)
# The emergency stop (scheduler/stops.py): how long engaging waits for sends already past the
# workers' check before it records the instant from which nothing in scope reaches a gateway.
AGENTFLOW_STOP_FENCE_SECONDS = env_float("AGENTFLOW_STOP_FENCE_SECONDS", 2.0)
# The default threshold of the job-failing alert rule (scheduler/alerts.py; the rule's row, edited
# in the admin, decides once it exists): one alert after this many consecutive final failures.
AGENTFLOW_JOB_FAILURE_ALERT_AFTER = env_int("AGENTFLOW_JOB_FAILURE_ALERT_AFTER", 3, minimum=1)
# Blocked providers (fleet/probes.py): a tiny run probes each open episode this often, and the
# GitHub issue opened for it is polled on the same beat (closed: probe now).
AGENTFLOW_PROVIDER_PROBE_SECONDS = env_float("AGENTFLOW_PROVIDER_PROBE_SECONDS", 180.0)
AGENTFLOW_PROVIDER_PROBE_PROMPT = env_str(
    "AGENTFLOW_PROVIDER_PROBE_PROMPT", "AgentFlow provider probe: reply with the single word OK."
)
AGENTFLOW_PROVIDER_PROBE_TIMEOUT_SECONDS = env_int("AGENTFLOW_PROVIDER_PROBE_TIMEOUT_SECONDS", 60, minimum=1)
# The issue notification: both set, or no issue. The token is a secret (AGENTFLOW_GITHUB_TOKEN_FILE).
AGENTFLOW_GITHUB_REPO = env_str("AGENTFLOW_GITHUB_REPO")  # "owner/name"
AGENTFLOW_GITHUB_TOKEN = env_str("AGENTFLOW_GITHUB_TOKEN")
AGENTFLOW_GITHUB_API_URL = env_str("AGENTFLOW_GITHUB_API_URL", "https://api.github.com")
AGENTFLOW_GITHUB_TIMEOUT_SECONDS = env_float("AGENTFLOW_GITHUB_TIMEOUT_SECONDS", 10.0)
# Notifications (scheduler/notifications/): each HTTP call's timeout; a delivery that fails is
# retried after full-jitter backoff (uniform in [0, min(CAP, BASE * 2^(n-1))] s), failed after
# MAX_ATTEMPTS attempts.
AGENTFLOW_NOTIFY_TIMEOUT_SECONDS = env_float("AGENTFLOW_NOTIFY_TIMEOUT_SECONDS", 10.0)
AGENTFLOW_NOTIFY_RETRY_BASE_SECONDS = env_float("AGENTFLOW_NOTIFY_RETRY_BASE_SECONDS", 10.0)
AGENTFLOW_NOTIFY_RETRY_CAP_SECONDS = env_float("AGENTFLOW_NOTIFY_RETRY_CAP_SECONDS", 600.0)
AGENTFLOW_NOTIFY_MAX_ATTEMPTS = env_int("AGENTFLOW_NOTIFY_MAX_ATTEMPTS", 8, minimum=1)
# Where operators reach this install (links in notifications); empty: the links are paths.
AGENTFLOW_PUBLIC_URL = env_str("AGENTFLOW_PUBLIC_URL")
# Webhooks (webhooks/): a body above this many bytes is refused with 413 (an endpoint may set its
# own cap); the delivery log keeps this many days.
AGENTFLOW_WEBHOOK_MAX_BODY = env_int("AGENTFLOW_WEBHOOK_MAX_BODY", 1024 * 1024, minimum=1)
AGENTFLOW_WEBHOOK_RETENTION_DAYS = env_int("AGENTFLOW_WEBHOOK_RETENTION_DAYS", 14, minimum=1)
# A worker's liveness key lives this long past its last renewal (renewed every third of it).
AGENTFLOW_WORKER_LEASE_SECONDS = env_int("AGENTFLOW_WORKER_LEASE_SECONDS", 6)

# File watches (issue 11 §3; scheduler/triggers/watch.py, `manage.py run_file_watcher`): a watch's
# directory must lie under one of these roots (os.pathsep-separated, ~ expanded).
AGENTFLOW_WATCH_ROOTS = [
    str(Path(p).expanduser())
    for p in env_str("AGENTFLOW_WATCH_ROOTS", str(DATA_DIR / "watch")).split(os.pathsep)
    if p.strip()
]
AGENTFLOW_WATCH_BATCH_MAX = env_int("AGENTFLOW_WATCH_BATCH_MAX", 1000, minimum=1)  # paths per run
AGENTFLOW_WATCH_POLL_SECONDS = env_float("AGENTFLOW_WATCH_POLL_SECONDS", 2.0)  # watch table re-read
AGENTFLOW_WATCH_EVENTS_KEPT = env_int("AGENTFLOW_WATCH_EVENTS_KEPT", 2000, minimum=10)  # per watch
# Each long-lived process's heartbeat (agentflow/lib/heartbeat.py): written this often, gone after 3 missed.
AGENTFLOW_HEARTBEAT_SECONDS = env_int("AGENTFLOW_HEARTBEAT_SECONDS", 10)
# The automation log (agentflow/lib/eventlog.py): a Redis stream of run and trigger events, this many kept.
AGENTFLOW_EVENT_LOG_MAX = env_int("AGENTFLOW_EVENT_LOG_MAX", 10_000)
# Result actions (scheduler/results.py): attempts per delivery before it is failed.
AGENTFLOW_RESULT_MAX_ATTEMPTS = env_int("AGENTFLOW_RESULT_MAX_ATTEMPTS", 5)
# Results longer than this are stored cut (Run.result_truncated).
AGENTFLOW_RUN_RESULT_MAX_CHARS = env_int("AGENTFLOW_RUN_RESULT_MAX_CHARS", 64 * 1024)
# The queue page's predictions (dashboard/queue_page.py): a queue's backlog worth a warning, and
# the memory of AgentFlow's processes together (MB) that the trend is measured against.
AGENTFLOW_QUEUE_OVERFLOW_THRESHOLD = env_int("AGENTFLOW_QUEUE_OVERFLOW_THRESHOLD", 1000, minimum=1)
AGENTFLOW_MEMORY_ALERT_MB = env_int("AGENTFLOW_MEMORY_ALERT_MB", 2048, minimum=1)
AGENTFLOW_CLEANUP_BATCH_SIZE = env_int("AGENTFLOW_CLEANUP_BATCH_SIZE", 10000)
# Chat messages longer than this are stored truncated (with a marker); 2 MiB by default.
AGENTFLOW_CHAT_MAX_CHARS = env_int("AGENTFLOW_CHAT_MAX_CHARS", 2 * 1024 * 1024)
# How long an open chat panel stays registered for BATCH-003 without a refresh from its page.
AGENTFLOW_CHAT_PANEL_TTL = env_int("AGENTFLOW_CHAT_PANEL_TTL", 30)
# The dashboard websocket: chat panels one socket may open, panel.open rate (a token bucket:
# per second, burst), and how often it checks Redis and sends the page a heartbeat (0: never).
AGENTFLOW_WS_MAX_PANELS = env_int("AGENTFLOW_WS_MAX_PANELS", 20)
AGENTFLOW_WS_PANEL_OPEN_RATE = env_float("AGENTFLOW_WS_PANEL_OPEN_RATE", 1.0)
AGENTFLOW_WS_PANEL_OPEN_BURST = env_int("AGENTFLOW_WS_PANEL_OPEN_BURST", 10, minimum=1)
AGENTFLOW_WS_HEARTBEAT = env_float("AGENTFLOW_WS_HEARTBEAT", 10.0)

# Rate limits (scheduler/limits.py), shared by every worker through Redis: comma-separated
# <key>=<budget>, keys gateway:<id>, provider:<name>, model:<provider>/<model> or <kind>:*,
# budgets <n>rpm, <n>tpm, <n>rpm/<n>tpm or off; e.g. "provider:openai=60rpm/90000tpm,gateway:*=120rpm".
# Operators override them at runtime (limits.set_budget). After a provider's rate-limit error its
# key backs off from BASE seconds, doubling per consecutive error (±10 %), at most CAP seconds.
AGENTFLOW_RATE_LIMITS = env_str("AGENTFLOW_RATE_LIMITS")
try:
    limits.parse_budgets(AGENTFLOW_RATE_LIMITS)
except limits.BudgetError as exc:
    raise SettingsError(f"AGENTFLOW_RATE_LIMITS: {exc}") from None
AGENTFLOW_RATE_LIMIT_BACKOFF_BASE = env_float("AGENTFLOW_RATE_LIMIT_BACKOFF_BASE", 60.0)
AGENTFLOW_RATE_LIMIT_BACKOFF_CAP = env_float("AGENTFLOW_RATE_LIMIT_BACKOFF_CAP", 300.0)
# Circuit breakers per gateway x provider (scheduler/breakers.py): FAILURES consecutive failures
# open one for OPEN_SECONDS, then one probe run (which holds the probe for PROBE_SECONDS at most).
AGENTFLOW_BREAKER_FAILURES = env_int("AGENTFLOW_BREAKER_FAILURES", 5, minimum=1)
AGENTFLOW_BREAKER_OPEN_SECONDS = env_float("AGENTFLOW_BREAKER_OPEN_SECONDS", 60.0)
AGENTFLOW_BREAKER_PROBE_SECONDS = env_float("AGENTFLOW_BREAKER_PROBE_SECONDS", 300.0)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# Every line (Django, Celery, ours) through structlog: one JSON object per line in production,
# readable key=value lines elsewhere; lines logged inside logcontext.bind_run(...) carry the run's
# fields (run_id, job, attempt, gateway, agent).
LOG_FORMAT = env_choice("AGENTFLOW_LOG_FORMAT", "json" if PRODUCTION else "console", logcontext.FORMATS)
LOGGING = logcontext.logging_config(LOG_FORMAT, LOG_LEVEL)
logcontext.configure_structlog()
# Celery keeps the handler above instead of installing its own (so worker lines are JSON too).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# The secure executor (executor/): off by default; the sandbox is bubblewrap ("none" runs
# unsandboxed, with a warning on the Automation page); the allowlist is a module fixed at deploy.
AGENTFLOW_EXECUTOR_ENABLED = env_bool("AGENTFLOW_EXECUTOR_ENABLED", False)
AGENTFLOW_EXECUTOR_SANDBOX = env_str("AGENTFLOW_EXECUTOR_SANDBOX", "bwrap")
AGENTFLOW_EXECUTOR_ALLOWLIST = env_str("AGENTFLOW_EXECUTOR_ALLOWLIST", "executor.allowlist")

# Flows (flows/): where flow files and the directories a workspace_inspector may read live
# (comma-separated; relative paths are the project's), and how long a flow run may take in all.
AGENTFLOW_FLOWS_ROOTS = [
    str(BASE_DIR / p) if not Path(p).is_absolute() else p
    for p in env_list("AGENTFLOW_FLOWS_ROOTS", f"examples,{DATA_DIR / 'flows'}")
]
AGENTFLOW_FLOW_TIMEOUT = env_int("AGENTFLOW_FLOW_TIMEOUT", 3600)
