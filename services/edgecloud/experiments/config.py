"""The experiment's parameters: one YAML file (``data/fig5.yaml``) whose comments give each value's source.

Typed and validated here, so a typo fails at start with the file's place in the message. The LLM that
scores for the ICL policies may be overridden by ``EXPERIMENTS_LLM_URL`` / ``EXPERIMENTS_LLM_MODEL``; GPT-4o
joins panel (a) when ``OPENAI_API_KEY`` is set.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgecloud.core.vocabulary import ServiceType

DEFAULT_CONFIG_FILE = Path(__file__).parent / "data" / "fig5.yaml"


class ConfigError(ValueError):
    """The experiment file is missing, malformed or out of range; the message says where."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkloadConfig(Strict):
    users: int = Field(ge=1, le=1000)
    mean_output_tokens: int = Field(ge=2, le=100_000)
    output_tokens_spread: float = Field(ge=0, lt=1)
    bytes_per_token: float = Field(gt=0)
    quality_share: float = Field(ge=0, le=1)
    regular_types: tuple[ServiceType, ...] = Field(min_length=1)
    quality_types: tuple[ServiceType, ...] = Field(min_length=1)
    episode_window_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _types_match_their_class(self) -> WorkloadConfig:
        if any(kind.quality_preferred for kind in self.regular_types):
            raise ValueError("regular_types must not hold quality-preferred types")
        if not all(kind.quality_preferred for kind in self.quality_types):
            raise ValueError("quality_types must hold only quality-preferred types (science_reasoning, math, coding)")
        return self


class SystemConfig(Strict):
    edge_profile: str
    cloud_profile: str
    jitter: float = Field(ge=0, lt=1)
    backhaul_s: float = Field(ge=0)
    scheduler: str
    radio: str


class DecisionConfig(Strict):
    target_delay_s: float = Field(gt=0)
    quality_penalty: float = Field(gt=0)
    epsilon: str
    latest_examples: int = Field(ge=1)
    llm_url: str
    llm_model: str


class LearningConfig(Strict):
    episodes: int = Field(ge=1)
    policies: tuple[str, ...] = Field(min_length=1)


class ModelPair(Strict):
    name: str
    edge: str
    cloud: str


class SweepConfig(Strict):
    tasks_per_point: int = Field(ge=1)
    users: tuple[int, ...] = Field(min_length=1)
    mean_output_tokens: tuple[int, ...] = Field(min_length=1)
    quality_share: tuple[float, ...] = Field(min_length=1)
    model_pairs: tuple[ModelPair, ...] = Field(min_length=1)


class ExperimentConfig(Strict):
    seed: int
    workload: WorkloadConfig
    system: SystemConfig
    decision: DecisionConfig
    learning: LearningConfig
    sweeps: SweepConfig

    @classmethod
    def load(cls, path: Path = DEFAULT_CONFIG_FILE) -> ExperimentConfig:
        try:
            with open(path, encoding="utf-8") as file:
                document = yaml.safe_load(file)
        except OSError as error:
            raise ConfigError(f"cannot read the experiment file {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from None
        try:
            return cls.model_validate(document)
        except ValidationError as error:
            places = "; ".join(
                f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
            )
            raise ConfigError(f"{path}: {places}") from None


class LlmOverrides(BaseSettings):
    """Where the ICL policies' LLM is, when not the file's (``EXPERIMENTS_*``), and GPT-4o's key."""

    model_config = SettingsConfigDict(env_prefix="EXPERIMENTS_", extra="ignore")

    llm_url: str | None = Field(None, description="OpenAI base URL of the decision LLM; default: the file's.")
    llm_model: str | None = Field(None, description="Its model name; default: the file's.")
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias="OPENAI_API_KEY",
        description="With a key, GPT-4o also decides in panel (a) (paper: 'GPT-4o ... as a benchmark').",
    )
    openai_url: str = Field("https://api.openai.com/v1", description="OpenAI's base URL (or a compatible one).")
    openai_model: str = Field("gpt-4o", description="The paper's large decision LLM.")
