"""Keys presented as ``Authorization: Bearer <key>``, the one way every service takes them.

The scheme is matched case-insensitively (RFC 9110 section 11.1); keys are compared in constant time,
so how long a refusal takes says nothing about how much of a key was right. ``docs/security.md`` says
which key each endpoint needs.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from pydantic import SecretStr

from edgecloud.core.errors import AuthenticationError, PermissionDeniedError

BEARER = "bearer"


def bearer_headers(key: SecretStr | None) -> dict[str, str]:
    """The ``Authorization`` header that presents ``key`` (none without a key)."""
    return {} if key is None else {"Authorization": f"Bearer {key.get_secret_value()}"}


def presented_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header; None for no header or another scheme."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == BEARER and key else None


def key_matches(authorization: str | None, keys: Iterable[SecretStr]) -> bool:
    """True when the header presents one of ``keys``."""
    presented = presented_key(authorization)
    if presented is None:
        return False
    matched = False
    for key in keys:  # every key is compared: no early exit that a timing could reveal
        matched |= hmac.compare_digest(presented.encode(), key.get_secret_value().encode())
    return matched


def require_key(authorization: str | None, keys: Iterable[SecretStr], who: str) -> None:
    """Refuse (401) unless the header presents one of ``keys``; ``who`` names the key in the message."""
    if not key_matches(authorization, keys):
        raise AuthenticationError(f"Incorrect or missing {who}. Send it as 'Authorization: Bearer <key>'.")


def require_service_key(authorization: str | None, key: SecretStr | None, who: str, open_when_unset: bool) -> None:
    """A service-to-service endpoint: its own key when one is set; without one, open only if allowed."""
    if key is not None:
        require_key(authorization, [key], who)
    elif not open_when_unset:
        raise PermissionDeniedError(f"This endpoint is disabled: no {who} is configured.")
