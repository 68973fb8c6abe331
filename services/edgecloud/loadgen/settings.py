"""The load generator's settings: one typed object, read from ``LOADGEN_*`` variables and the CLI flags.

Every CLI flag is a field here (``--request-rate`` is ``request_rate``), so the flags, their defaults
and their help text have one source; ``cli.py`` builds the parser from these fields. Validation
refuses what would make a run meaningless or unsafe (no bound, a non-loopback target without
``--allow-remote``, contradictory flags) with messages that name the flags.
"""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from edgecloud.core.reward import RewardParams
from edgecloud.core.settings import AIR_PORT, AUTO_MODEL, http_url, local_url
from edgecloud.core.vocabulary import QUALITY_PREFERRED, ServiceType

Arrival = Literal["poisson", "gamma"]
# Service level objectives of --goodput, in ms, as vllm bench serve names them ("e2el" is its e2e).
SLO_METRICS = ("ttft", "tpot", "e2e")
SLO_ALIASES = {"e2el": "e2e"}
DEFAULT_NUM_REQUESTS = 100
LOCAL_HOST_NAMES = frozenset({"localhost"})


def _comma_list(value: Any) -> Any:
    """``"1,2,4"`` (a flag or an environment variable) as a list; lists pass through for pydantic to check."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, int | float):
        return [value]
    return value


class LoadgenSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOADGEN_", extra="ignore", validate_default=True)

    # Target.
    base_url: str = Field(
        local_url(AIR_PORT, "/v1"),
        description="OpenAI base URL to load; the default is the testbed's air interface (:8000/v1 the gateway).",
    )
    model: str = Field(AUTO_MODEL, description="Model name sent; the default lets the gateway route.")
    api_key: SecretStr | None = Field(
        None, description="Bearer key if the target needs one (default none); never shown."
    )
    allow_remote: bool = Field(False, description="Allow a target that is not on this machine (loopback).")

    # Arrivals.
    arrival: Arrival = Field("poisson", description="Open-loop arrivals: 'poisson' or 'gamma' (with --burstiness).")
    burstiness: float = Field(
        1.0,
        gt=0,
        description="Gamma shape B of the gaps (mean 1/rate, CV 1/sqrt(B)): 1 is Poisson, < 1 burstier; "
        "as vllm bench serve --burstiness.",
    )
    request_rate: Annotated[list[float], NoDecode] = Field(
        [1.0],
        description="Requests per second; a comma list runs a sweep, one run per rate. The default, 1, is gentle on "
        "the CPU testbed's vLLM.",
    )
    concurrency: Annotated[list[int] | None, NoDecode] = Field(
        None,
        description="Closed loop: this many requests in flight at all times (comma list: sweep); default none "
        "(open loop).",
    )
    ramp_up_s: float = Field(
        0.0, ge=0, description="Rate rises linearly from 0 to the rate over this many seconds; 0: no ramp."
    )

    # Bounds.
    num_requests: int | None = Field(
        None,
        ge=0,
        description=f"Requests per run; default {DEFAULT_NUM_REQUESTS} when --duration-s is not given, else no "
        "limit; 0: no limit (then --duration-s is needed).",
    )
    duration_s: float | None = Field(
        None,
        gt=0,
        description="Stop each run after this many seconds, cancelling requests in flight then; default none.",
    )
    timeout_s: float = Field(
        120.0,
        gt=0,
        description="Limit of one request; 120 s leaves room for the paper's 1,000-token cloud answer (~32 s).",
    )
    preflight_timeout_s: float = Field(
        5.0, gt=0, description="Limit of the reachability check (GET /models) before a run."
    )

    # Workload.
    num_users: int = Field(20, ge=1, description="Distinct users (paper Sec. IV-A: 20 users in the cell).")
    quality_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of quality-preferred tasks (science_reasoning, math, coding); by default in proportion "
        "to the number of types, 3/7 with all seven (every type equally likely).",
    )
    service_types: Annotated[list[ServiceType] | None, NoDecode] = Field(
        None, description="Only these service types (comma list); default none: all seven."
    )
    max_tokens: int | None = Field(
        None, ge=1, description="Every request's max_tokens (fixed); default none: drawn per request."
    )
    output_tokens_mean: int = Field(
        256,
        ge=1,
        description="Mean of max_tokens, drawn uniformly from 1..2*mean-1 per request; 256 suits the CPU "
        "testbed (the paper's average is 1,000).",
    )
    type_hint: bool = Field(
        True, description="Send each request's service type as x-service-type; off: the gateway classifies."
    )
    seed: int = Field(0, description="Seed of the whole schedule: arrivals, users, types, prompts, max_tokens.")

    # Metrics.
    goodput: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="SLOs for goodput as 'metric:ms' pairs (ttft, tpot, e2e), e.g. 'ttft:500 tpot:50'; "
        "default none (goodput not reported).",
    )
    target_delay_s: float = Field(
        RewardParams.target_delay_s, gt=0, description="T_target of the reward (eq. 10); the decision service's."
    )
    quality_penalty: float = Field(
        RewardParams.quality_penalty, gt=0, description="r_penalty of the reward (eq. 10); the decision service's."
    )

    # Output.
    output_dir: Path | None = Field(
        None, description="Directory for report.json, requests.csv and plots; default none (summary only)."
    )
    progress: bool = Field(True, description="Progress bar on stderr.")
    export_prompts: Path | None = Field(
        None,
        description="Write the planned requests as JSONL (for vllm bench serve, guidellm), send nothing; default none.",
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value, "the base URL")

    @field_validator("request_rate", mode="before")
    @classmethod
    def _rates(cls, value: Any) -> Any:
        rates = _comma_list(value)
        for rate in rates if isinstance(rates, list) else []:
            try:
                number = float(rate)
            except (TypeError, ValueError):
                raise ValueError(f"not a number: {rate!r}") from None
            if not (math.isfinite(number) and number > 0):
                raise ValueError(f"every rate must be a positive number of requests/s, got {rate}")
        return rates

    @field_validator("concurrency", mode="before")
    @classmethod
    def _concurrency(cls, value: Any) -> Any:
        levels = _comma_list(value)
        for level in levels if isinstance(levels, list) else []:
            if not str(level).isdigit() or int(level) < 1:
                raise ValueError(f"every concurrency must be a whole number >= 1, got {level}")
        return levels

    @field_validator("service_types", mode="before")
    @classmethod
    def _types(cls, value: Any) -> Any:
        names = _comma_list(value)
        known = [service_type.value for service_type in ServiceType]
        for name in names if isinstance(names, list) else []:
            if name not in known:
                raise ValueError(f"unknown service type {name!r}; known: {', '.join(known)}")
        return names

    @field_validator("goodput", mode="before")
    @classmethod
    def _slos(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        pairs = value.split() if isinstance(value, str) else value
        slos: dict[str, float] = {}
        for pair in pairs:
            name, _, number = str(pair).partition(":")
            name = SLO_ALIASES.get(name, name)
            if name not in SLO_METRICS:
                raise ValueError(f"{pair!r}: expected metric:ms with metric one of {', '.join(SLO_METRICS)}")
            try:
                slos[name] = float(number)
            except ValueError:
                raise ValueError(f"{pair!r}: the SLO must be a number of milliseconds") from None
            if not (math.isfinite(slos[name]) and slos[name] >= 0):
                raise ValueError(f"{pair!r}: the SLO must be a non-negative number of milliseconds")
        return slos

    @model_validator(mode="after")
    def _check(self) -> LoadgenSettings:
        given = self.model_fields_set
        if self.concurrency is not None:
            for name, flag in (("request_rate", "--request-rate"), ("arrival", "--arrival"),
                               ("burstiness", "--burstiness"), ("ramp_up_s", "--ramp-up-s")):  # fmt: skip
                if name in given:
                    raise ValueError(f"{flag} shapes open-loop arrivals; --concurrency runs a closed loop: give one")
        if self.arrival == "poisson" and self.burstiness != 1.0:
            raise ValueError("--burstiness needs --arrival gamma (Poisson arrivals are burstiness 1)")
        if "max_tokens" in given and "output_tokens_mean" in given:
            raise ValueError("give --max-tokens (fixed) or --output-tokens-mean (drawn per request), not both")
        if self.request_limit is None and self.duration_s is None:
            raise ValueError("unbounded run refused: give --num-requests N (N > 0) or --duration-s")
        if self.export_prompts is not None and self.request_limit is None:
            raise ValueError("--export-prompts writes --num-requests requests: give --num-requests N (N > 0)")
        self._check_type_mix()
        self._check_loopback()
        return self

    def _check_type_mix(self) -> None:
        quality, regular = self.type_groups
        if self.quality_share is None:
            return
        if self.quality_share > 0 and not quality:
            raise ValueError("--quality-share > 0 but --service-types has no quality-preferred type")
        if self.quality_share < 1 and not regular:
            raise ValueError("--quality-share < 1 but --service-types has only quality-preferred types")

    def _check_loopback(self) -> None:
        host = urlsplit(self.base_url).hostname or ""
        if self.allow_remote or host in LOCAL_HOST_NAMES:
            return
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False  # a name: we do not resolve it, so it counts as remote
        if not loopback:
            raise ValueError(
                f"refusing to load-test {host!r}, which is not a loopback address: "
                "pass --allow-remote if you operate that server"
            )

    @property
    def request_limit(self) -> int | None:
        """Requests per run: the flag, else the default unless a duration bounds the run; None = no limit."""
        if self.num_requests is None:
            return None if self.duration_s is not None else DEFAULT_NUM_REQUESTS
        return self.num_requests or None

    @property
    def type_groups(self) -> tuple[list[ServiceType], list[ServiceType]]:
        """(quality-preferred, regular) types in use, in the enum's order."""
        chosen = self.service_types or list(ServiceType)
        types = [service_type for service_type in ServiceType if service_type in chosen]
        return [t for t in types if t in QUALITY_PREFERRED], [t for t in types if t not in QUALITY_PREFERRED]

    @property
    def effective_quality_share(self) -> float:
        """The flag, else quality-preferred types' share of the types in use."""
        if self.quality_share is not None:
            return self.quality_share
        quality, regular = self.type_groups
        return len(quality) / (len(quality) + len(regular))

    @property
    def reward_params(self) -> RewardParams:
        return RewardParams(self.target_delay_s, self.quality_penalty)

    def public(self) -> dict[str, Any]:
        """The configuration for the report: JSON-ready, the API key only as whether one was set."""
        data = self.model_dump(mode="json")
        data["api_key"] = "set" if self.api_key is not None else None
        data["request_limit"] = self.request_limit
        data["effective_quality_share"] = self.effective_quality_share
        return data
