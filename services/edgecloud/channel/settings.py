"""Configuration of the channel emulator: one typed object, environment variables prefixed ``CHANNEL_``.

Radio parameters (layout, propagation, numerology, fading) live in the radio YAML file with their
3GPP sources (``data/radio.yaml``); this object holds the service's own choices.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from edgecloud.channel.radio.params import DEFAULT_RADIO_FILE, load_radio_params
from edgecloud.channel.schedulers import SCHEDULERS
from edgecloud.core.headers import ROUTE_HEADER, USER_ID_HEADER
from edgecloud.core.settings import AIR_PORT, GATEWAY_PORT, ServerSettings, http_url, local_url


class ChannelModelName(StrEnum):
    UMA = "uma"  # 3GPP TR 38.901 urban macro
    UMI = "umi"  # 3GPP TR 38.901 urban micro, street canyon
    CONSTANT = "constant"  # every user alone gets constant_capacity_bps (to check eq. 1 exactly)


class ByteAccounting(StrEnum):
    TOKENS = "tokens"  # output tokens x bytes_per_token, as the paper counts (eq. 1)
    WIRE = "wire"  # the bytes actually on the wire (SSE framing and JSON included)


class ChannelSettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="CHANNEL_", extra="ignore", validate_default=True)

    port: int = Field(AIR_PORT, ge=1, le=65535, description="TCP port; the testbed's air interface (core.settings).")
    upstream_url: str = Field(
        local_url(GATEWAY_PORT), description="The base-station gateway this air interface fronts (its root URL)."
    )

    channel_model: ChannelModelName = Field(
        ChannelModelName.UMA, description="Radio model: 'uma' (default, the paper's urban cell), 'umi' or 'constant'."
    )
    radio_file: Path = Field(
        DEFAULT_RADIO_FILE, description="YAML of radio parameters with their sources; default: data/radio.yaml."
    )
    radio_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Radio parameters over the file's, as JSON, e.g. CHANNEL_RADIO_OVERRIDES='{\"mobility\": true}'.",
    )
    constant_capacity_bps: float = Field(
        10e6,
        gt=0,
        description="Capacity C of the 'constant' model, bit/s, shared by PF when several users wait. 10 Mbit/s "
        "is our choice: a mid-cell 20 MHz NR user.",
    )
    scheduler: str = Field("pf", description="RB scheduler: 'pf' (the paper's, Sec. II-C), 'rr' or 'maxci'.")
    pf_window_slots: float = Field(
        100, ge=1, description="Averaging window W of PF's throughput filter, slots; ~100 is the usual choice."
    )
    stats_window_s: float = Field(
        1.0, gt=0, description="Averaging window of the cell statistics (sum throughput, RB utilisation), seconds."
    )
    seed: int = Field(0, description="Seed of drops, shadowing, LOS states and fading; default 0.")

    byte_accounting: ByteAccounting = Field(
        ByteAccounting.TOKENS, description="'tokens' (default, as eq. 1) or 'wire' (actual response bytes)."
    )
    bytes_per_token: float = Field(
        4.0, gt=0, description="s^token of eq. 1: about 4 bytes per token (paper Sec. IV-A, after OpenAI [8])."
    )
    backhaul_delay_s: float = Field(
        0.05,
        ge=0,
        description="t_back of eq. 1, added before an offloaded answer reaches the BS. The paper fixes t_back "
        "without a value; 50 ms is ours, the order of a one-way continental edge-to-cloud path.",
    )
    offload_header: str = Field(ROUTE_HEADER, description="Response header by which the gateway marks the route.")
    offload_value: str = Field("cloud", description="Value of offload_header that means offloaded (alpha = 1).")
    user_header: str = Field(
        USER_ID_HEADER,
        description="Request header naming the user; else the body's OpenAI 'user' field. The name is the client's "
        "own: the radio user is '<name>@<client>', the client being its API key (a hash of it) or else its address.",
    )
    trust_user_header: bool = Field(
        False,
        description="Take user_header as the radio user as it is, for every client: only behind a proxy of the "
        "operator that sets it (otherwise any client could speak for any user).",
    )
    max_ues_per_key: int = Field(100, ge=1, description="Radio users one API key may have attached at once (ours).")
    max_ues_per_address: int = Field(
        100, ge=1, description="Radio users one client address may have attached at once, whatever keys it shows."
    )
    tick_s: float = Field(
        0.002,
        gt=0,
        le=0.05,
        description="How often delivered chunks are released to clients; bounds the added timing error. 2 ms.",
    )
    max_ues: int = Field(1000, ge=1, description="Users attached at once; the longest idle one leaves for a new one.")

    gateway_api_key: SecretStr | None = Field(
        None, description="Key presented for the gateway's /v1/air-reports (the gateway's GATEWAY_AIR_REPORT_API_KEY)."
    )
    admin_api_key: SecretStr | None = Field(
        None, description="Operator key for radio control (PUT /v1/ues/{user}); unset disables radio control."
    )
    connect_timeout_s: float = Field(3.0, gt=0, description="Connect timeout to the gateway.")
    read_timeout_s: float = Field(
        600.0, gt=0, description="Longest silence from the gateway before giving up (the gateway has its own)."
    )

    @field_validator("upstream_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url, "upstream_url")

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, name: str) -> str:
        if name not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
        return name

    @model_validator(mode="after")
    def _radio_parameters_load(self) -> ChannelSettings:
        """Fail at start-up, with the loader's message, on a bad radio file or override."""
        load_radio_params(self.radio_file, **self.radio_overrides)
        return self

    @field_validator("offload_header", "user_header")
    @classmethod
    def _lower_header(cls, name: str) -> str:
        return name.lower()
