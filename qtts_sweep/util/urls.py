"""Credentials out of URLs before they are printed, logged or written anywhere.

Two tools, one per kind of input:

- `redact_url(url)`: one URL (a storage URL, `tracking.tracking_uri`, an artifact location). Parsed by SQLAlchemy's
  `make_url`, which finds the password wherever it ends (`/`, spaces, `@` percent-encoded or not), and rendered with
  `hide_password=True`; query parameters that carry a secret (`?password=`, `passwd`, `token`, ...) are masked too
  (`make_url` keeps them). Something that is not a URL is returned as is.
- `redact(text)`: free text (an error message, a log line, a command line). A string that is one URL goes through
  `redact_url`; otherwise a regex masks `scheme://user:password@` (the password runs to the next `@` on its line, so
  it may hold `/` and spaces) and secret query values.

`secret_overrides` / `public_overrides` split Hydra overrides whose value holds a credential from the rest, so
that launchers can hand the former to their drivers through the environment (`SECRET_OVERRIDES_ENV`) instead of
argv or a pickled job.
"""

from __future__ import annotations

import json
import os
import re

# query parameters whose value is a credential (libpq/psycopg `password`, MySQL `passwd`, tokens and keys)
SECRET_PARAMS = ("password", "passwd", "pwd", "pass", "secret", "token", "access_token", "api_key", "apikey")
_QUERY = re.compile(r"(?P<lead>[?&;](?:" + "|".join(SECRET_PARAMS) + r")=)(?P<value>[^&;#\s]*)", re.IGNORECASE)
# scheme://user:password@host -> scheme://user:***@host; the user name stays (it says whose study it is).
# In free text the password runs to the next `@` on its line (it may hold `/` and spaces), never into another URL;
# a `host:port/path@...` in text is masked too (over-masking is the safe side).
_PASSWORD = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>(?:(?!://)[^@\n])*?)@(?=[^\s@])"
)
_ONE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://\S")

SECRET_OVERRIDES_ENV = "QTTS_SWEEP_SECRET_OVERRIDES"  # JSON list of overrides a launcher keeps out of argv


def _mask_query(text: str) -> str:
    return _QUERY.sub(lambda m: f"{m.group('lead')}***", text)


def redact_url(url: str) -> str:
    """`url` with its password and secret query values replaced by `***` (anything else is returned as is)."""
    if not _ONE_URL.match(url.strip()) or "@" not in url:  # no user info: only the query can hold a secret
        return _mask_query(url)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError):
        return _mask_query(_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", url))
    if parsed.password is None and not _QUERY.search(url):
        return url  # nothing secret: keep the user's spelling exactly
    return _mask_query(parsed.render_as_string(hide_password=True))


def redact(text: str) -> str:
    """`text` with the password of every URL in it (and secret query values) replaced by `***`."""
    if _ONE_URL.match(text) and "\n" not in text and text.count("://") == 1:
        return redact_url(text)  # one URL (perhaps with words after it): parsed, whatever its password holds
    return _mask_query(_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text))


def has_secret(value: str) -> bool:
    """Whether `value` holds a credential `redact` would mask."""
    return redact(value) != value


def secret_overrides(overrides: list[str]) -> list[str]:
    """The overrides whose value holds a credential (e.g. `tracking.tracking_uri=http://u:pw@host`)."""
    return [o for o in overrides if has_secret(o.split("=", 1)[-1])]


def public_overrides(overrides: list[str]) -> list[str]:
    """The overrides safe to put on a command line, in a pickled job or in a log."""
    secret = set(secret_overrides(overrides))
    return [o for o in overrides if o not in secret]


def secret_env(overrides: list[str]) -> dict[str, str]:
    """The environment entry that carries `overrides`' secret ones to a driver ({} when there are none)."""
    secret = secret_overrides(overrides)
    return {SECRET_OVERRIDES_ENV: json.dumps(secret)} if secret else {}


def overrides_from_env() -> list[str]:
    """The secret overrides a launcher passed through the environment (`secret_env`)."""
    raw = os.environ.get(SECRET_OVERRIDES_ENV)
    return list(json.loads(raw)) if raw else []
