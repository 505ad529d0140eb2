"""API keys for the endpoint: where replicas read them and how a request is checked.

Keys come from an environment variable or a file the config names (a Kubernetes Secret as env
or mounted file), never from the config itself, which travels to the dashboard and into logs.
Several keys may be active at once (whitespace- or line-separated), so a key is rotated by
adding the new one, moving clients, then removing the old one. A request is checked against
every key with a constant-time comparison.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping

from rayline.config import ServeAuthConfig
from rayline.errors import ConfigError

MIN_KEY_CHARS = 16
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rayline"'}


def load_api_keys(auth: ServeAuthConfig, environ: Mapping[str, str] = os.environ) -> tuple[bytes, ...]:
    """The active keys; () when authentication is off. Fails closed: configured but unreadable,
    empty or weak keys are an error, never an open endpoint."""
    if not auth.enabled:
        return ()
    keys: list[str] = []
    if auth.api_key_env:
        if not environ.get(auth.api_key_env, "").strip():
            raise ConfigError(f"serve.auth.api_key_env: environment variable {auth.api_key_env} is not set or empty "
                              f"on this node; the endpoint will not start without its API key")
        keys += environ[auth.api_key_env].split()
    if auth.api_key_file:
        try:
            text = open(os.path.expanduser(auth.api_key_file), encoding="utf-8").read()
        except OSError as e:
            raise ConfigError(f"serve.auth.api_key_file: cannot read {auth.api_key_file} ({e.strerror})") from None
        if not text.split():
            raise ConfigError(f"serve.auth.api_key_file: {auth.api_key_file} holds no key")
        keys += text.split()
    weak = [k for k in keys if len(k) < MIN_KEY_CHARS]
    if weak:
        raise ConfigError(f"serve.auth: {len(weak)} API key(s) shorter than {MIN_KEY_CHARS} characters; "
                          f"use a random key, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return tuple(k.encode() for k in keys)


def authorized(header: str | None, keys: tuple[bytes, ...]) -> bool:
    """True when authentication is off, or `header` is `Bearer <one of the keys>`."""
    if not keys:
        return True
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    given = token.strip().encode("utf-8", "surrogateescape")
    ok = False
    for key in keys:  # no early exit: the time taken does not tell which key nearly matched
        ok |= hmac.compare_digest(given, key)
    return ok


def client_headers(auth: ServeAuthConfig, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Headers rayline's own client calls (the pipeline's smoke request) send."""
    keys = load_api_keys(auth, environ)
    return {"authorization": f"Bearer {keys[0].decode()}"} if keys else {}
