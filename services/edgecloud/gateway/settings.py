"""Configuration of the gateway: one typed object, environment variables prefixed ``GATEWAY_``."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from edgecloud.core.settings import ServerSettings


class Route(StrEnum):
    """Where a request is served: the paper's offloading decision alpha (eq. 1), 0 = edge, 1 = cloud."""

    EDGE = "edge"
    CLOUD = "cloud"


class GatewaySettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", validate_default=True)

    port: int = Field(8000, ge=1, le=65535, description="TCP port; 8000 is vLLM's and OpenAI tooling's habit.")

    edge_url: str = Field(
        "http://127.0.0.1:8001/v1",
        description="OpenAI base URL of the edge LLM (the local testbed's vLLM CPU port).",
    )
    edge_model: str = Field(
        "smollm2-135m-instruct",
        description="Model name the edge backend serves (the local testbed's SmolLM2; Llama-3-8B on GPU hosts).",
    )
    edge_max_model_len: int = Field(2048, ge=1, description="Edge context length; vLLM CPU recipe's --max-model-len.")
    edge_api_key: SecretStr | None = Field(None, description="Bearer key for the edge backend, if it needs one.")

    cloud_url: str = Field(
        "http://127.0.0.1:8002/v1",
        description="OpenAI base URL of the cloud LLM (the local testbed's GPT-4o simulator port).",
    )
    cloud_model: str = Field("gpt-4o-cloud", description="Model name the cloud backend serves (simulator profile).")
    cloud_max_model_len: int = Field(128000, ge=1, description="Cloud context length; GPT-4o's 128k window.")
    cloud_api_key: SecretStr | None = Field(None, description="Bearer key for the cloud backend (OpenAI's GPT-4o).")

    default_route: Route = Field(Route.EDGE, description="Route when neither the model name nor x-route picks one.")
    auto_model: str = Field(
        "edgecloud-auto",
        description="Model name clients use to let the gateway choose the route (the decision service, later).",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys clients must present as 'Authorization: Bearer'; empty means open (local testbed).",
    )

    connect_timeout_s: float = Field(3.0, gt=0, description="Upstream TCP connect timeout.")
    read_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest silence from upstream (before the first byte or between chunks) before a 504.",
    )
    max_upstream_connections: int = Field(1024, ge=1, description="Pooled upstream connections in total.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")

    @field_validator("edge_url", "cloud_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"backend URL must start with http:// or https://, got {url!r}")
        return url.rstrip("/")
