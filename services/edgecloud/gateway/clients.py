"""Client keys: who is asking, what budget they have and which routing headers they may use.

A key is valid if it is one of ``GATEWAY_API_KEYS`` or if its SHA-256 is in the client-keys file
(``GATEWAY_CLIENT_KEYS_FILE``; the file holds hashes, no secret, so it can live in a repository). Each
file entry may set its own limits and permissions; whatever it leaves out, and every key of
``GATEWAY_API_KEYS``, takes the gateway's defaults (``GATEWAY_CLIENT_*``). Example::

    keys:
      team-a:                       # the key's name: in logs, metrics and rate-limit counters
        sha256: 9f86d081884c7d65...  # sha256sum of the key
        requests_per_minute: 600
        tokens_per_minute: 200000   # prompt and completion tokens, as OpenAI counts them
        may_pin_route: false        # x-route or a backend's model name: 403
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from edgecloud.core.auth import presented_key
from edgecloud.core.errors import AuthenticationError, PermissionDeniedError

OPEN_CLIENT = "open"  # the one client of a gateway that takes no keys
KEY_NAME_HEX = 12  # hex digits of a GATEWAY_API_KEYS key's SHA-256 that name it


class KeyEntry(BaseModel):
    """One key of the client-keys file; None: the gateway's default."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    may_pin_route: bool | None = None
    may_state_requirement: bool | None = None
    may_state_type: bool | None = None


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: dict[str, KeyEntry] = Field(default_factory=dict)


@dataclass(frozen=True)
class ClientKey:
    """A client as the gateway knows it: its name, budget per minute (None: unlimited) and permissions."""

    name: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    may_pin_route: bool = True
    may_state_requirement: bool = True
    may_state_type: bool = True

    def check(self, *, pins_route: bool, states_requirement: bool, states_type: bool) -> None:
        """Refuse (403) a routing header this key may not use."""
        for used, allowed, what in (
            (pins_route, self.may_pin_route, "pin a route (x-route, or a backend's model name)"),
            (states_requirement, self.may_state_requirement, "state a quality requirement (x-quality-requirement)"),
            (states_type, self.may_state_type, "state a service type (x-service-type, metadata.service_type)"),
        ):
            if used and not allowed:
                raise PermissionDeniedError(f"This API key may not {what}.", code="header_not_permitted")


@dataclass(frozen=True)
class ClientDefaults:
    requests_per_minute: int | None
    tokens_per_minute: int | None
    may_pin_route: bool
    may_state_requirement: bool
    may_state_type: bool

    def apply(self, name: str, entry: KeyEntry | None = None) -> ClientKey:
        """The client ``name``: these defaults, with what its file entry sets instead."""
        overrides = {} if entry is None else entry.model_dump(exclude={"sha256"}, exclude_none=True)
        return ClientKey(name=name, **{**asdict(self), **overrides})


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ClientKeys:
    """Looks up the presented key among the configured ones, in constant time per key."""

    def __init__(self, api_keys: list[SecretStr], keys_file: Path | None, defaults: ClientDefaults):
        self._by_hash: dict[str, ClientKey] = {}
        for key in api_keys:
            digest = _sha256(key.get_secret_value())
            self._by_hash[digest] = defaults.apply(f"key-{digest[:KEY_NAME_HEX]}")
        if keys_file is not None:
            listed = KeysFile.model_validate(yaml.safe_load(keys_file.read_text()) or {})
            for name, entry in listed.keys.items():
                self._by_hash[entry.sha256] = defaults.apply(name, entry)
        self._open = defaults.apply(OPEN_CLIENT)

    @property
    def required(self) -> bool:
        return bool(self._by_hash)

    def authenticate(self, authorization: str | None) -> ClientKey:
        """The presented key's client; the open client when no keys are configured; else 401."""
        if not self._by_hash:
            return self._open
        presented = presented_key(authorization)
        digest = _sha256(presented) if presented is not None else ""
        found = None
        for known, client in self._by_hash.items():  # every entry compared: no early exit to time
            if hmac.compare_digest(digest, known):
                found = client
        if found is None:
            raise AuthenticationError("Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.")
        return found
