"""Typed readers of the environment for ``agentflow/settings.py``, and the one-line settings error.

Every reader raises :class:`SettingsError` (an ``ImproperlyConfigured``) whose message names the
variable and the accepted form, e.g. ``AGENTFLOW_GATEWAY_TIMEOUT='soon' is not a number of
seconds (e.g. 10 or 2.5)``. The entry points (manage.py, asgi.py, celery.py) call
:func:`exit_on_settings_error` so an operator sees that one line on stderr and exit code 2,
not a traceback.

This module is imported by the settings file itself, so it must not read ``django.conf.settings``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from django.core.exceptions import ImproperlyConfigured

EXIT_SETTINGS = 2  # the usual "bad usage / configuration" code


class SettingsError(ImproperlyConfigured):
    """A setting the environment gave in a form the settings cannot use."""


def env_str(name: str, default: str = "") -> str:
    """A string from the environment; ``NAME_FILE`` (a path) wins, for container secrets."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except FileNotFoundError:
            raise SettingsError(f"{name}_FILE={path}: no such file") from None
        except IsADirectoryError:
            raise SettingsError(f"{name}_FILE={path}: is a folder, not a file") from None
        except PermissionError:
            raise SettingsError(f"{name}_FILE={path}: permission denied") from None
        except UnicodeDecodeError:
            raise SettingsError(f"{name}_FILE={path}: not a UTF-8 text file") from None
    return os.environ.get(name, default)


def _raw(name: str) -> str | None:
    raw = env_str(name)
    return None if raw.strip() == "" else raw


def env_bool(name: str, default: bool = False) -> bool:
    raw = _raw(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")


def env_int(name: str, default: int, *, minimum: int | None = 0) -> int:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number (e.g. {default})") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    """A non-negative number (of seconds, usually): ``10``, ``2.5``."""
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number of seconds (e.g. {default:g} or 2.5)") from None
    if value != value or value in (float("inf"), float("-inf")) or value < minimum:
        raise SettingsError(f"{name}={raw!r} must be a finite number of at least {minimum:g}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    """Comma-separated values, blanks dropped."""
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default).strip() or default
    if value not in choices:
        raise SettingsError(f"{name}={value!r} must be one of: {', '.join(choices)}")
    return value


def exit_on_settings_error(exc: ImproperlyConfigured) -> NoReturn:
    """Print the one line and leave with exit code 2 (no traceback)."""
    message = " ".join(str(exc).split())  # one line, whatever the message held
    print(f"agentflow: configuration error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_SETTINGS)


def load_settings_or_exit() -> None:
    """Read the settings now, so an error in them is reported as one line before anything starts."""
    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018 - the access loads the settings module
    except ImproperlyConfigured as exc:
        exit_on_settings_error(exc)


def secret_key_problem(key: str, dev_default: str) -> str | None:
    """Why ``key`` is not fit for production (None when it is): missing, the development
    default, shorter than 50 characters, or fewer than 10 distinct characters ("x" * 60)."""
    if not key:
        return "is missing"
    if key == dev_default or key.startswith(("dev-insecure-", "django-insecure")):
        return "is the development default"
    if len(key) < 50:
        return f"is too short ({len(key)} characters)"
    if len(set(key)) < 10:
        return f"has too few distinct characters ({len(set(key))})"
    return None
