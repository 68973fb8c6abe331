"""The simulator's settings: one typed object, read from ``LLMSIM_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from edgecloud.core.settings import CLOUD_PORT, LOCAL_CLOUD_MODEL, ServerSettings
from edgecloud.llmsim.failures import FailureRates
from edgecloud.llmsim.profiles import DEFAULT_PROFILES_FILE, LatencyProfile, load_profiles


class LLMSimSettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="LLMSIM_")

    port: int = Field(
        CLOUD_PORT, ge=1, le=65535, description="TCP port; the testbed's cloud (core.settings.CLOUD_PORT)."
    )
    profile: str = Field(
        LOCAL_CLOUD_MODEL,
        description="Latency profile name from the profiles file; default: the paper's cloud LLM (Sec. IV-A).",
    )
    profiles_file: Path = Field(
        DEFAULT_PROFILES_FILE, description="YAML file of latency profiles; default: the packaged data/profiles.yaml."
    )
    model: str | None = Field(
        None, description="Served model name clients must send; default: the profile name (like vLLM's model path)."
    )
    served_model_aliases: list[str] = Field(
        default_factory=list,
        description="Further accepted model names, all listed by /v1/models (like several --served-model-name).",
    )
    content: Literal["corpus", "echo"] = Field(
        "corpus", description="'corpus': answers from data/corpus.jsonl; 'echo': the prompt repeated. Default: corpus."
    )
    default_max_tokens: int = Field(
        256,
        ge=1,
        description="Output length when a request sets no max_tokens (finish_reason 'stop'); 256 is a typical "
        "chat answer. The paper's workload averages 1,000 tokens (Sec. IV-A): set 1000 to reproduce it.",
    )
    seed: int = Field(0, description="Seed of jitter for unseeded requests and of failure injection; default 0.")
    fail_429_rate: float = Field(0.0, ge=0, le=1, description="Probability a request gets 429; default 0 (off).")
    fail_503_rate: float = Field(0.0, ge=0, le=1, description="Probability a request gets 503; default 0 (off).")
    fail_disconnect_rate: float = Field(
        0.0, ge=0, le=1, description="Probability a stream is cut before [DONE]; default 0 (off)."
    )
    max_num_seqs: int | None = Field(
        None, ge=1, description="Override of the profile's max_num_seqs (concurrent sequences); default: the profile's."
    )
    max_model_len: int | None = Field(
        None, ge=2, description="Override of the profile's max_model_len (context length); default: the profile's."
    )
    jitter: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Override of the profile's jitter; 0 gives eq. (3) exactly (paper constants).",
    )

    @model_validator(mode="after")
    def _check(self) -> LLMSimSettings:
        self.resolve_profile()
        self.failure_rates()
        return self

    @property
    def served_model_name(self) -> str:
        return self.model or self.profile

    @property
    def served_model_names(self) -> list[str]:
        names = [self.served_model_name]
        return names + [alias for alias in self.served_model_aliases if alias not in names]

    def resolve_profile(self) -> LatencyProfile:
        """The chosen profile with this object's overrides applied."""
        if not self.profiles_file.is_file():
            raise ValueError(f"profiles_file {self.profiles_file} does not exist")
        profiles = load_profiles(self.profiles_file)
        if self.profile not in profiles:
            known = ", ".join(sorted(profiles))
            raise ValueError(f"unknown latency profile '{self.profile}'; known profiles: {known}")
        return profiles[self.profile].with_overrides(
            max_num_seqs=self.max_num_seqs, max_model_len=self.max_model_len, jitter=self.jitter
        )

    def failure_rates(self) -> FailureRates:
        return FailureRates(self.fail_429_rate, self.fail_503_rate, self.fail_disconnect_rate)
