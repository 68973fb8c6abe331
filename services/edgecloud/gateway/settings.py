"""Configuration of the gateway: one typed object, environment variables prefixed ``GATEWAY_``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from edgecloud.core.settings import (
    AUTO_MODEL,
    CLOUD_PORT,
    DECISION_PORT,
    EDGE_PORT,
    GATEWAY_PORT,
    LOCAL_CLOUD_MODEL,
    LOCAL_EDGE_MODEL,
    LOCAL_REDIS_URL,
    RedisClientSettings,
    ServerSettings,
    http_url,
    local_url,
)
from edgecloud.core.wire import (
    CELL_PATTERN,
    DEFAULT_CELL,
    DEFAULT_POLICY,
    LONGEST_CELL,
    MAX_EXPERIENCE_BATCH,
    POLICY_PATTERN,
)
from edgecloud.gateway.clients import ClientDefaults
from edgecloud.gateway.quality import DEFAULT_QUALITY_FILE


class Route(StrEnum):
    """Where a request is served: the paper's offloading decision alpha (eq. 1), 0 = edge, 1 = cloud."""

    EDGE = "edge"
    CLOUD = "cloud"


class GatewaySettings(ServerSettings, RedisClientSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", validate_default=True)

    port: int = Field(GATEWAY_PORT, ge=1, le=65535, description="TCP port (core.settings.GATEWAY_PORT).")

    edge_url: str = Field(
        local_url(EDGE_PORT, "/v1"), description="OpenAI base URL of the edge LLM (the local testbed's vLLM CPU port)."
    )
    edge_model: str = Field(
        LOCAL_EDGE_MODEL,
        description="Model name the edge backend serves (the local testbed's SmolLM2; Llama-3-8B on GPU hosts).",
    )
    edge_max_model_len: int = Field(2048, ge=1, description="Edge context length; vLLM CPU recipe's --max-model-len.")
    edge_api_key: SecretStr | None = Field(None, description="Bearer key for the edge backend, if it needs one.")

    cloud_url: str = Field(
        local_url(CLOUD_PORT, "/v1"),
        description="OpenAI base URL of the cloud LLM (the local testbed's GPT-4o simulator port).",
    )
    cloud_model: str = Field(LOCAL_CLOUD_MODEL, description="Model name the cloud backend serves (simulator profile).")
    cloud_max_model_len: int = Field(128000, ge=1, description="Cloud context length; GPT-4o's 128k window.")
    cloud_api_key: SecretStr | None = Field(None, description="Bearer key for the cloud backend (OpenAI's GPT-4o).")

    default_route: Route = Field(Route.EDGE, description="Route when neither the model name nor x-route picks one.")
    auto_model: str = Field(
        AUTO_MODEL,
        description="Model name clients use to let the gateway choose the route (asks the decision service).",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys clients must present as 'Authorization: Bearer'; with no client_keys_file either, the "
        "gateway is open (local testbed).",
    )
    client_keys_file: Path | None = Field(
        None, description="YAML of client keys by SHA-256, each with its own limits and permissions (clients.py)."
    )
    client_requests_per_minute: int | None = Field(None, ge=1, description="Default budget per key; unset: none.")
    client_tokens_per_minute: int | None = Field(
        None, ge=1, description="Default prompt + completion tokens per key and minute; unset: none."
    )
    client_may_pin_route: bool = Field(True, description="Default: a key may send x-route or name a backend model.")
    client_may_state_requirement: bool = Field(True, description="Default: a key may send x-quality-requirement.")
    client_may_state_type: bool = Field(True, description="Default: a key may state its service type.")
    limits_redis_url: str | None = Field(
        LOCAL_REDIS_URL,
        description="Redis for the per-key counters, shared by replicas; empty: each replica counts alone.",
    )

    decision_url: str | None = Field(
        local_url(DECISION_PORT),
        description="Decision service root URL (ICL offloading, eq. 5-7); empty: auto requests take default_route.",
    )
    decision_timeout_s: float = Field(
        3.0,
        gt=0,
        description="Longest wait for a decision before the gateway applies the fallback rule itself; above the "
        "decision service's own 2 s LLM wait, so its fallback (the pool's good example) normally answers first.",
    )
    decision_memory: bool = Field(
        True,
        description="Answer a decision the decision service gave for the same x, pool version and scorer from the "
        "gateway's memory, without a round trip (docs/decision.md, 'The gateway's memory'); exploration still "
        "happens at the service's epsilon. Needs decision_redis_url.",
    )
    decision_redis_url: str | None = Field(
        LOCAL_REDIS_URL,
        description="The decision service's Redis (its DECISION_REDIS_URL), where the gateway reads the pool's "
        "version and scorer to know whether a remembered decision still holds; empty: no memory.",
    )
    decision_memory_timeout_s: float = Field(
        0.25,
        gt=0,
        description="Budget of one read of the pool's version and scorer. Ours: a failed read sends every decision "
        "to the decision service for redis_retry_interval_s; on a saturated event loop (2 cores, concurrency 256) "
        "the 50 ms budget of the other Redis calls expired on most reads though Redis answered (BENCHMARKS.md), "
        "and decisions waiting meanwhile share one read, so a longer budget costs one wait, not one per request.",
    )
    decision_api_key: SecretStr | None = Field(
        None, description="The decision service's key (its DECISION_SERVICE_API_KEY), presented on every call."
    )
    air_report_api_key: SecretStr | None = Field(
        None,
        description="Key the air interface presents for /v1/air-reports (its CHANNEL_GATEWAY_API_KEY), apart from "
        "client keys; unset: air reports are accepted only while the gateway takes no client keys either.",
    )
    learn_from_client_choices: bool = Field(
        False,
        description="Let a request whose route or model the client pinned, or whose quality requirement it set "
        "below its type's default, feed the shared pool. Off: such experiences go to the pool of cell "
        "'<cell>.client-choices', apart, so no client can steer other users' decisions.",
    )
    decision_policy: str = Field(
        DEFAULT_POLICY, pattern=POLICY_PATTERN, description="Policy the decision service uses (see its GET /health)."
    )
    cell: str = Field(
        DEFAULT_CELL,
        pattern=CELL_PATTERN,
        max_length=LONGEST_CELL,
        description="This base station's id: the experience pool it reads and feeds.",
    )
    classify_prompts: bool = Field(
        True, description="Classify prompts with the MiniLM classifier when the client states no service type."
    )
    quality_file: Path = Field(
        DEFAULT_QUALITY_FILE, description="Quality indices per model and service type, with their benchmarks."
    )
    lengths_redis_url: str | None = Field(
        LOCAL_REDIS_URL,
        description="Redis for observed output lengths per service type, shared by replicas; empty: in-process only.",
    )
    max_estimated_tokens: int = Field(
        8192, ge=1, description="Cap of an output-length estimate taken from max_tokens (a client may ask for more)."
    )
    retry_other_side: bool = Field(
        True,
        description="Retry once on the other backend when the one the gateway chose fails before the first token "
        "(never for a client's pinned route or model: that request fails and says which backend failed).",
    )
    backend_down_s: float = Field(
        5.0,
        ge=0,
        description="After a backend fails (no connection, or no first token within first_token_timeout_s), route "
        "around it for this long, then let one request probe it.",
    )
    first_token_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait from sending a streamed request to its first token before the backend counts as "
        "failed (a non-streamed answer's headers come at its end: only read_timeout_s bounds it). Ours: about ten "
        "times the CPU SmolLM2's TTFT under load; lower it for a GPU backend.",
    )
    air_report_timeout_s: float = Field(
        60.0,
        gt=0,
        description="How long a request that came through the air interface waits for its transmission report "
        "before its experience is dropped (counted, never guessed).",
    )
    experience_queue_size: int = Field(
        10_000, ge=1, description="Experiences waiting to be written while the decision service is slow or down."
    )
    experience_batch_size: int = Field(
        MAX_EXPERIENCE_BATCH,
        ge=1,
        le=MAX_EXPERIENCE_BATCH,
        description="Most experiences in one post to the decision service (POST /v1/experiences/batch); the "
        "largest batch the service takes (core.wire.MAX_EXPERIENCE_BATCH).",
    )
    experience_batch_wait_s: float = Field(
        0.2,
        ge=0,
        description="How long the writer gathers experiences after the first one before posting (unless a batch "
        "fills first). Ours: nothing waits for it but the pool, which learns over hundreds of requests; at 20 ms a "
        "post carried 2-3 experiences at 150 requests/s and the decision service spent about 1 ms of CPU per "
        "request on them, at 200 ms half that (BENCHMARKS.md).",
    )
    experience_stop_timeout_s: float = Field(
        5.0,
        gt=0,
        description="At a stop, how long the experiences still waiting may take to reach the decision service "
        "(what is not sent by then goes to experience_spool, or is lost and counted); well under the stop grace "
        "of compose and Kubernetes, 30 s.",
    )
    experience_spool: Path | None = Field(
        None,
        description="JSON-lines file for the experiences the decision service did not take before a stop (kept "
        "current while it is down, for a crash); the next start posts them first. Unset: they are lost (and "
        "counted). In a container: on a volume.",
    )
    lengths_batch_size: int = Field(
        100,
        ge=1,
        description="Most output lengths pushed to Redis in one pipeline; ours: the window of one service type.",
    )
    lengths_batch_wait_s: float = Field(
        0.05,
        ge=0,
        description="How long output lengths are gathered before one pipeline pushes them (unless a batch fills "
        "first). Ours: an estimate, a median of the last 100 lengths, sees a length 50 ms later, less than a "
        "request lasts; 5 ms made a pipeline per request at low rates.",
    )

    connect_timeout_s: float = Field(3.0, gt=0, description="Upstream TCP connect timeout.")
    read_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest silence from upstream (before the first byte or between chunks) before a 504.",
    )
    max_upstream_connections: int = Field(1024, ge=1, description="Pooled upstream connections in total.")

    @field_validator("decision_url", "decision_redis_url", "lengths_redis_url", "limits_redis_url")
    @classmethod
    def _empty_is_none(cls, url: str | None) -> str | None:
        return url.rstrip("/") if url else None

    def client_defaults(self) -> ClientDefaults:
        return ClientDefaults(
            requests_per_minute=self.client_requests_per_minute,
            tokens_per_minute=self.client_tokens_per_minute,
            may_pin_route=self.client_may_pin_route,
            may_state_requirement=self.client_may_state_requirement,
            may_state_type=self.client_may_state_type,
        )

    @field_validator("edge_url", "cloud_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url, "backend URL")
