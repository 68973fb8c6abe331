"""Configuration of the local testbed: environment variables prefixed ``TESTBED_`` (or CLI flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgecloud.core.settings import (
    AIR_PORT,
    CLOUD_PORT,
    DECISION_LLM_PORT,
    DECISION_PORT,
    EDGE_PORT,
    GATEWAY_PORT,
    LOCAL_CLOUD_MODEL,
    LOCAL_EDGE_MODEL,
    REDIS_PORT,
)


class TestbedSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TESTBED_", extra="ignore")

    mode: Literal["vllm", "sim", "paper"] = Field(
        "vllm",
        description=(
            "vllm: the real vLLM CPU build (SmolLM2) serves at the edge and decides; sim: the Llama-3-8B simulator "
            "serves and is asked to decide (it cannot score: decisions fall back; no vLLM, starts in seconds); "
            "paper: the paper's profiles serve (Llama-3-8B edge, GPT-4o cloud, simulated) and the real vLLM decides "
            "(docs/live-loop.md: the testbed in which the edge can win)."
        ),
    )
    air_port: int = Field(
        AIR_PORT, description="Channel emulator port: the users' OpenAI base URL, paced by the emulated radio."
    )
    gateway_port: int = Field(GATEWAY_PORT, description="Gateway port (OpenAI base URL http://127.0.0.1:PORT/v1).")
    edge_port: int = Field(EDGE_PORT, description="Edge LLM port.")
    cloud_port: int = Field(CLOUD_PORT, description="Cloud simulator port.")
    decision_port: int = Field(
        DECISION_PORT, description="Decision service port (in-context learning over the Redis pool)."
    )
    decision_llm_port: int = Field(
        DECISION_LLM_PORT, description="The deciding vLLM's port in paper mode (it serves nobody else)."
    )
    decision_llm_url: str | None = Field(
        None,
        description="Paper mode: decide with this running OpenAI-compatible LLM (base URL with /v1) instead of "
        "starting a vLLM; e.g. a GPU vLLM, or one already up.",
    )
    decision_llm_model: str = Field(
        LOCAL_EDGE_MODEL, description="The decision LLM's model name in paper mode (the vLLM CPU build's)."
    )
    redis_port: int = Field(REDIS_PORT, description="Redis port; Redis's own default.")
    state_dir: Path = Field(Path(".testbed"), description="Logs and Redis data of this testbed run.")
    vllm_python: Path = Field(Path(".venv-vllm/bin/python"), description="Python of the vLLM venv (scripts/bootstrap).")
    model_dir: Path = Field(
        Path(".cache/models") / LOCAL_EDGE_MODEL, description="Prepared edge model (scripts/bootstrap)."
    )
    edge_sim_profile: str = Field("llama-3-8b-edge", description="Simulator profile at the edge in sim mode (paper).")
    cloud_sim_profile: str = Field(LOCAL_CLOUD_MODEL, description="Simulator profile of the cloud (paper's GPT-4o).")
    vllm_startup_timeout_s: float = Field(
        900.0, description="vLLM's first start compiles for about 2 minutes on 2 cores; later starts are faster."
    )
    startup_timeout_s: float = Field(60.0, description="Startup limit for Redis, the simulators and the gateway.")
    demo_prompt: str = Field(
        "Hi! I just joined this network. Could you greet me and tell me something fun about the weekend?",
        description="The real prompt sent over the air once everything is up (a chat request: served at the edge).",
    )
    demo_max_tokens: int = Field(64, ge=2, description="Output limit of the demo prompt.")
    summary_every_s: float = Field(
        10.0, gt=0, description="How often the running testbed prints a summary of new traffic (from /metrics)."
    )
    once: bool = Field(False, description="Stop after the demo prompt instead of serving until Ctrl-C.")
