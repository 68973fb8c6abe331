"""OpenAI wire models shared by every OpenAI-compatible front (gateway, air interface, simulator).

All request and response bodies of the OpenAI-compatible API live here, on one base model that
keeps unknown fields (the OpenAI API adds fields often, and a relay must not drop them). Fields
follow the order of OpenAI's API reference; extensions of ours come after a comment saying so.
Modelled on vLLM's ``entrypoints/openai/protocol.py``.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class OpenAIBaseModel(BaseModel):
    """Base of every wire model: extra fields are kept, as the OpenAI API allows them."""

    model_config = ConfigDict(extra="allow")


# --- errors ------------------------------------------------------------------------------------


class ErrorInfo(OpenAIBaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(OpenAIBaseModel):
    """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorInfo


# --- requests ----------------------------------------------------------------------------------


# Largest token id a prompt may hold: vLLM keeps token ids as int32.
MAX_TOKEN_ID = 2**31 - 1
TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]


class RequestModel(OpenAIBaseModel):
    """Base of request bodies: unknown fields are kept, known ones have strict types (``"8"`` is no integer)."""

    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(RequestModel):
    include_usage: bool = False


class ChatMessage(RequestModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text, with the text parts of a multi-part content joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part.get("text", "")) for part in self.content if isinstance(part, dict))


class _GenerationRequest(RequestModel):
    """Fields common to chat and text completions, with the limits the OpenAI API documents."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=1)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    user: str | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    @property
    def service_type_hint(self) -> str | None:
        """The service type the client states in ``metadata`` (our convention: key ``service_type``)."""
        return (self.metadata or {}).get("service_type")

    def to_upstream_payload(self, upstream_model: str) -> dict[str, Any]:
        """The body to send to a backend: what the client set, with the backend's model name.

        Usage is always requested in a stream, so the relay can count output tokens exactly.
        ``metadata`` is for the gateway (the service type) and stays here: OpenAI refuses it without ``store``.
        """
        payload = self.model_dump(exclude_unset=True, exclude_none=False, exclude={"metadata"})
        payload["model"] = upstream_model
        if self.stream:
            payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
        return payload


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def output_token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def prompt_text(self) -> str:
        return "\n".join(message.text() for message in self.messages)


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, prompt: Any) -> Any:
        if isinstance(prompt, list) and not prompt:
            raise ValueError("prompt must not be empty")
        return prompt

    @property
    def output_token_limit(self) -> int | None:
        return self.max_tokens

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if all(isinstance(item, str) for item in self.prompt):
            return "\n".join(str(item) for item in self.prompt)
        return ""


GENERATION_REQUESTS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
}
"""The OpenAI generation endpoints every front (gateway, air interface, simulator) serves, and their bodies."""


# --- responses ---------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class UsageInfo(OpenAIBaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ModelCard(OpenAIBaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "edgecloud"
    # Not in the OpenAI spec (vLLM adds it too): the context length the model accepts.
    max_model_len: int | None = None


class ModelList(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)


class ChatCompletionMessage(OpenAIBaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatCompletionChoice(OpenAIBaseModel):
    index: int = 0
    message: ChatCompletionMessage
    finish_reason: str | None = None
    logprobs: Any = None


class ChatCompletionResponse(OpenAIBaseModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo


class CompletionChoice(OpenAIBaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: Any = None


class CompletionResponse(OpenAIBaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo
