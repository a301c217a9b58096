"""Tiny readers for settings from the environment that fail loudly on bad values."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_is_set(name: str) -> bool:
    """Whether the operator chose this setting, as opposed to leaving it to a default."""
    return name in os.environ


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}.")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {value}.")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}.") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ImproperlyConfigured(f"{name} must be between {minimum} and {maximum}, not {value}.")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value!r}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


SECRET_HOWTO = (
    'python -c "import secrets; print(secrets.token_urlsafe(50))" makes one; '
    "`make run` keeps its own in .cache/secret_key, and PARLEY_DEBUG=true uses a development key."
)


def env_secret(name: str, *, fallback: str | None) -> str:
    """``name`` from the environment, else the contents of the file ``<name>_FILE`` names,
    else ``fallback``; with no fallback, start-up stops with a message saying what to set."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    file_name = os.environ.get(f"{name}_FILE", "").strip()
    if file_name:
        return _secret_from_file(f"{name}_FILE", Path(file_name))
    if fallback is None:
        raise ImproperlyConfigured(
            f"{name} is not set. Set it to a long random value, or {name}_FILE to a file holding one: {SECRET_HOWTO}"
        )
    return fallback


def _secret_from_file(variable: str, path: Path) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"{variable} names {path}, which cannot be read ({exc.strerror}).") from None
    if not value:
        raise ImproperlyConfigured(f"{variable} names {path}, which is empty: {SECRET_HOWTO}")
    return value
