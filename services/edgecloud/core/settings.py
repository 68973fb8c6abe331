"""What every service's settings share: where it listens, how it logs, what it accepts; and the local
testbed's addresses, the defaults of every service.

Each service subclasses ``ServerSettings`` with its own environment prefix (``GATEWAY_``,
``LLMSIM_`` ...), so one typed object holds a service's whole configuration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgecloud.core.redis_guard import CALL_TIMEOUT_S, RETRY_INTERVAL_S

LogLevel = Literal["debug", "info", "warning", "error"]

# Where the local testbed (scripts/testbed) runs each part: every service's default port and address.
LOCAL_HOST = "127.0.0.1"
AIR_PORT = 8080
"""The air interface (channel emulator): the users' OpenAI base URL."""
GATEWAY_PORT = 8000
"""The gateway at the base station; 8000 is vLLM's and OpenAI tooling's habit."""
EDGE_PORT = 8001
"""The edge LLM (vLLM's CPU build, or the simulator)."""
CLOUD_PORT = 8002
"""The cloud LLM (the simulator with GPT-4o's profile)."""
DECISION_PORT = 8003
"""The decision service."""
DECISION_LLM_PORT = 8004
"""The deciding vLLM in the testbed's paper mode, where the edge port serves a simulator."""
REDIS_PORT = 6379
"""Redis's own default."""
AUTO_MODEL = "edgecloud-auto"
"""The model name by which a client lets the gateway choose the route (GET /v1/models lists it first)."""
LOCAL_CLOUD_MODEL = "gpt-4o-cloud"
"""The testbed's cloud: the simulator's profile of the paper's GPT-4o (Sec. IV-A)."""
LOCAL_EDGE_MODEL = "smollm2-135m-instruct"
"""The model the testbed's edge serves (scripts/bootstrap prepares it; Llama-3-8B on a GPU host)."""


def local_url(port: int, path: str = "") -> str:
    """``http://127.0.0.1:<port><path>``: a testbed service's URL."""
    return f"http://{LOCAL_HOST}:{port}{path}"


def local_redis_url(port: int = REDIS_PORT) -> str:
    return f"redis://{LOCAL_HOST}:{port}/0"


LOCAL_REDIS_URL = local_redis_url()


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    host: str = Field("127.0.0.1", description="Address to listen on; loopback unless deployed.")
    port: int = Field(GATEWAY_PORT, ge=1, le=65535, description="TCP port to listen on.")
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


class RedisClientSettings(BaseSettings):
    """Settings of a service that keeps state in Redis behind ``core.redis_guard.RedisGuard``."""

    redis_timeout_s: float = Field(
        CALL_TIMEOUT_S, gt=0, description="Redis connect and command timeout; past it Redis counts as down."
    )
    redis_retry_interval_s: float = Field(
        RETRY_INTERVAL_S, ge=0, description="After a failed Redis call, how long the fallback serves before a retry."
    )


def http_url(url: str, what: str) -> str:
    """``url`` without a trailing slash, refused unless it is http(s): for the URL settings of every service."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{what} must start with http:// or https://, got {url!r}")
    return url.rstrip("/")
