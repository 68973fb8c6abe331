"""What every service's settings share: where it listens and how it logs.

Each service subclasses ``ServerSettings`` with its own environment prefix (``GATEWAY_``,
``LLMSIM_`` ...), so one typed object holds a service's whole configuration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error"]


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    host: str = Field("127.0.0.1", description="Address to listen on; loopback unless deployed.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    log_level: LogLevel = Field("info", description="Log level of the service and of uvicorn.")
    log_format: Literal["text", "json"] = Field("text", description="Log lines as text, or one JSON object each.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="Longest time a request's headers may take to arrive (slow-loris); ours."
    )
    max_connections: int = Field(
        4096,
        ge=1,
        description="Open client connections at most; at the cap an idle one makes room, else a new one is "
        "refused (core.connections). Ours: a quarter of this machine's 20,000 descriptors per process, with room "
        "for the upstream pool.",
    )
    metrics_api_key: SecretStr | None = Field(
        None, description="Key a scraper presents for GET /metrics; unset: open (a Prometheus beside it)."
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted, chunked or not (413 above)."
    )


def http_url(url: str, what: str) -> str:
    """``url`` without a trailing slash, refused unless it is http(s): for the URL settings of every service."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{what} must start with http:// or https://, got {url!r}")
    return url.rstrip("/")
