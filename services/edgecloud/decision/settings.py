"""Configuration of the decision service: environment variables prefixed ``DECISION_``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from edgecloud.core.reward import RewardParams
from edgecloud.core.settings import (
    DECISION_PORT,
    EDGE_PORT,
    LOCAL_EDGE_MODEL,
    LOCAL_REDIS_URL,
    RedisClientSettings,
    ServerSettings,
    local_url,
)
from edgecloud.decision.icl_method import CandidateScore, IclMethod
from edgecloud.decision.prompt import PromptText
from edgecloud.decision.retrieval import ExampleSelection
from edgecloud.decision.scoring import CANNOT_SCORE_RETRY_S


class DecisionSettings(ServerSettings, RedisClientSettings):
    model_config = SettingsConfigDict(env_prefix="DECISION_", extra="ignore", validate_default=True)

    port: int = Field(DECISION_PORT, ge=1, le=65535, description="TCP port (core.settings.DECISION_PORT).")
    redis_url: str = Field(LOCAL_REDIS_URL, description="The experience pool's Redis (testbed's).")
    # The pool's own Redis timing, not the gateway's: a decision waits for the LLM anyway, and a false outage
    # would serve a stale pool, so a slow answer is waited for longer; a real outage is retried sooner.
    redis_timeout_s: float = Field(
        0.5, gt=0, description="Redis connect and command timeout; past it the pool is 'down'."
    )
    redis_retry_interval_s: float = Field(
        1.0, ge=0, description="After a failed Redis call, how long the last snapshot serves before a retry."
    )
    llm_url: str = Field(
        local_url(EDGE_PORT, "/v1"),
        description="OpenAI base URL of the decision LLM: the edge vLLM (paper: Llama3-8B).",
    )
    llm_model: str = Field(LOCAL_EDGE_MODEL, description="The decision LLM's model name (the testbed's edge).")
    llm_api_key: SecretStr | None = Field(None, description="Bearer key of the decision LLM (GPT-4o needs one).")
    scoring: str = Field(
        "auto",
        pattern="^(auto|prompt_logprobs|top_logprobs|constrained)$",
        description="How candidates are scored (scoring.py); auto finds the best the endpoint supports.",
    )
    llm_timeout_s: float = Field(
        2.0,
        gt=0,
        description="Longest a decision waits for the LLM before the fallback; the call goes on and fills the cache.",
    )
    llm_request_timeout_s: float = Field(
        300.0,
        gt=0,
        description="HTTP timeout of one scoring call; a cold 1,500-token prefill takes ~30 s on the CPU testbed.",
    )
    scoring_retry_s: float = Field(
        CANNOT_SCORE_RETRY_S,
        gt=0,
        description="How long an LLM that offered no way to score is not asked again (decisions fall back).",
    )
    # How the icl policy asks the LLM (icl_method.py). Defaults: the best on the consistency grid
    # (benchmarks/decision_consistency.py; the numbers are in docs/decision.md). icl_paper ignores them.
    icl_examples: ExampleSelection = Field(
        ExampleSelection.NEAREST, description="Examples shown: the k nearest to x, nearest last, or the whole pool."
    )
    icl_k: int = Field(1, ge=1, le=64, description="Examples shown under icl_examples=nearest.")
    icl_calibrate: bool = Field(False, description="Subtract the content-free query's scores (contextual calibration).")
    icl_candidate_score: CandidateScore = Field(
        CandidateScore.SUM,
        description="A candidate's score from its tokens' log-probabilities: sum (eq. 5), first_token or mean.",
    )
    icl_name_candidates: bool = Field(
        False, description="The task description names the answers local/offload (the paper's text does)."
    )
    icl_quality_hint: bool = Field(
        True, description="The task description says quality-preferred types need the cloud more often (paper)."
    )
    epsilon: str = Field(
        "constant:0.1", description="Exploration schedule (exploration.make_schedule); section III-B's epsilon."
    )
    seed: int = Field(0, description="Seed of exploration and random baselines.")
    target_delay_s: float = Field(
        RewardParams.target_delay_s, gt=0, description="T_target of eq. 10 (core.reward.RewardParams explains it)."
    )
    quality_penalty: float = Field(
        RewardParams.quality_penalty, gt=0, description="r_penalty of eq. 10 (core.reward.RewardParams explains it)."
    )
    latest_examples: int = Field(10, ge=1, le=100, description="Examples shown by the icl_latest baseline.")
    cache_entries: int = Field(10_000, ge=1, description="Decision cache size; the keyword grid has 35 states.")
    experience_buffer: int = Field(10_000, ge=1, description="Experiences kept in memory while Redis is down.")
    experience_spool: Path | None = Field(
        None,
        description="A file that keeps the experiences still waiting for Redis when the service stops (kept "
        "current while Redis is down, for a crash); the next start reads it back and sends them first. Unset: they "
        "are lost at a stop (the log says how many).",
    )
    max_body_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="Largest request body accepted (413 above): five times the largest experience batch (100 "
        "experiences, about 50 KB); a single body is under 1 KB.",
    )
    admin_api_key: SecretStr | None = Field(None, description="Operator key for DELETE /v1/pool; unset disables it.")
    service_api_key: SecretStr | None = Field(
        None,
        description="Key the gateway presents for decisions, experiences and the pool and prompt views "
        "(docs/security.md); unset: those are open, for a decision service only loopback reaches (the testbed "
        "sets one).",
    )

    def icl_method(self) -> IclMethod:
        """The icl policy's method from the ``icl_*`` fields."""
        return IclMethod(
            selection=self.icl_examples,
            k=self.icl_k,
            text=PromptText(name_candidates=self.icl_name_candidates, quality_hint=self.icl_quality_hint),
            candidate_score=self.icl_candidate_score,
            calibrate=self.icl_calibrate,
        )
