"""The simulator's OpenAI-compatible serving logic, between the wire models and the engine.

``SimulatorService`` turns a chat or text completion request into a plan (prompt tokens, the
exact output text, the engine request, injected failures) and runs it: to one response object,
or to the bytes of a server-sent event stream. Like vLLM's ``serving_chat.py``; no HTTP here.
Stream chunks are built from precomputed JSON text around ``json.dumps`` of each token's piece,
because a pydantic model per token would cost more than everything else the simulator does.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from edgecloud.core.clock import Clock, RealClock
from edgecloud.core.errors import BadRequestError, ContextLengthError, ModelNotFoundError
from edgecloud.core.protocol import (
    ChatCompletionChoice,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    UsageInfo,
    new_id,
)
from edgecloud.core.sse import DONE_EVENT
from edgecloud.llmsim.content import ContentSource, GeneratedText, TokenCodec, load_corpus
from edgecloud.llmsim.engine import Engine, EngineRequest
from edgecloud.llmsim.failures import FailureInjector, StreamAborted
from edgecloud.llmsim.metrics import EngineMetrics
from edgecloud.llmsim.profiles import LatencyProfile
from edgecloud.llmsim.settings import LLMSimSettings


def chatml_prompt(messages: list[ChatMessage]) -> str:
    """The prompt a ChatML model such as SmolLM2 sees, so prompt_tokens count like vLLM's."""
    turns = "".join(f"<|im_start|>{message.role}\n{message.text()}<|im_end|>\n" for message in messages)
    return turns + "<|im_start|>assistant\n"


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class _Plan:
    """Everything decided about a request before its first token."""

    model: str
    prompt_tokens: int
    output: GeneratedText
    finish_reason: str
    engine_request: EngineRequest
    include_usage: bool
    disconnect_after: int | None

    def usage(self) -> UsageInfo:
        completion_tokens = len(self.output.pieces)
        return UsageInfo(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=self.prompt_tokens + completion_tokens,
        )


def _encode_piece(encoded: dict[str, str], piece: str) -> str:
    encoded[piece] = text = json.dumps(piece)
    return text


class _ChunkWriter:
    """SSE chunks of one stream, shaped like OpenAI's and vLLM's, from precomputed JSON text."""

    def __init__(self, plan: _Plan, encoded: dict[str, str], *, chat: bool, echo: str = ""):
        self._encoded = encoded  # JSON of each piece, shared by the service's streams
        head = {
            "id": new_id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": plan.model,
        }
        opening = _compact(head)[:-1]
        end = ',"usage":null}' if plan.include_usage else "}"
        close = "}" if chat else ""  # the delta object

        def tail(finish_reason: str | None) -> str:
            return f'{close},"logprobs":null,"finish_reason":{_compact(finish_reason)}}}]{end}'

        self._usage_head = opening
        self._suffix = tail(None)
        self._final_suffix = tail(plan.finish_reason)
        if chat:
            self._prefix = opening + ',"choices":[{"index":0,"delta":{"content":'
            role = opening + ',"choices":[{"index":0,"delta":{"role":"assistant","content":""'
            self._role_event = f"data: {role}{self._suffix}\n\n"
        else:
            self._prefix = opening + ',"choices":[{"index":0,"text":'
            self._role_event = ""
        self._echo = echo

    def tokens(self, pieces: tuple[str, ...], start: int, end: int, *, final: bool) -> bytes:
        """One event per token ``start..end-1``; the stream's last token carries the finish_reason."""
        prefix, suffix, encoded = self._prefix, self._suffix, self._encoded
        texts = [encoded.get(piece) or _encode_piece(encoded, piece) for piece in pieces[start:end]]
        if start == 0 and self._echo:
            texts[0] = json.dumps(self._echo + pieces[0])
        events = [f"data: {prefix}{text}{suffix}\n\n" for text in texts]
        if final:
            events[-1] = f"data: {prefix}{texts[-1]}{self._final_suffix}\n\n"
        if start == 0:
            events.insert(0, self._role_event)
        return "".join(events).encode()

    def usage(self, usage: UsageInfo) -> bytes:
        return f'data: {self._usage_head},"choices":[],"usage":{_compact(usage.model_dump())}}}\n\n'.encode()


class SimulatorService:
    def __init__(
        self,
        *,
        profile: LatencyProfile,
        engine: Engine,
        content: ContentSource,
        failures: FailureInjector,
        served_model_names: list[str],
        default_max_tokens: int,
        clock: Clock,
        metrics: EngineMetrics,
    ):
        self.profile = profile
        self.engine = engine
        self.metrics = metrics
        self.content = content
        self.failures = failures
        self.served_model_names = served_model_names
        self.default_max_tokens = default_max_tokens
        self._clock = clock
        # Pieces are token texts, so this cache is bounded by the vocabulary (about 50k entries).
        self._encoded_pieces: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: LLMSimSettings, registry: CollectorRegistry) -> SimulatorService:
        profile = settings.resolve_profile()
        clock = RealClock()
        codec = TokenCodec()
        metrics = EngineMetrics(registry, settings.served_model_name)
        engine = Engine(profile, clock=clock, rng=random.Random(settings.seed), metrics=metrics)
        return cls(
            profile=profile,
            engine=engine,
            content=ContentSource(codec, load_corpus(), settings.content),
            failures=FailureInjector(settings.failure_rates(), random.Random(f"{settings.seed}/failures")),
            served_model_names=settings.served_model_names,
            default_max_tokens=settings.default_max_tokens,
            clock=clock,
            metrics=metrics,
        )

    async def start(self) -> None:
        """Nothing to open: the engine, the text and the failures are all in memory (the app shell calls this)."""

    async def close(self) -> None:
        """Nothing to release."""

    def models(self) -> ModelList:
        cards = [ModelCard(id=name, max_model_len=self.profile.max_model_len) for name in self.served_model_names]
        return ModelList(data=cards)

    async def chat(
        self, request: ChatCompletionRequest, service_type: str | None = None
    ) -> ChatCompletionResponse | AsyncIterator[bytes]:
        """A chat completion; ``service_type`` (the gateway's ``x-service-type``) picks answers of that kind."""
        arrival = self._clock.now()
        prompt_tokens = self.content.codec.count(chatml_prompt(request.messages))
        question = next((m.text() for m in reversed(request.messages) if m.role == "user"), request.prompt_text())
        plan = self._plan(request, request.output_token_limit, prompt_tokens, question, arrival, service_type)
        if request.stream:
            return self._stream(plan, _ChunkWriter(plan, self._encoded_pieces, chat=True))
        await self._run(plan)
        message = ChatCompletionMessage(content=plan.output.text)
        choice = ChatCompletionChoice(message=message, finish_reason=plan.finish_reason)
        return ChatCompletionResponse(model=plan.model, choices=[choice], usage=plan.usage())

    async def completion(
        self, request: CompletionRequest, service_type: str | None = None
    ) -> CompletionResponse | AsyncIterator[bytes]:
        arrival = self._clock.now()
        prompt = request.prompt
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]  # a batch of one prompt
        if isinstance(prompt, str):
            text, prompt_tokens = prompt, self.content.codec.count(prompt)
        elif all(isinstance(item, int) for item in prompt):
            text, prompt_tokens = self.content.codec.decode(prompt), len(prompt)  # type: ignore[arg-type]
        else:
            raise BadRequestError("The simulator serves one prompt per request, not a batch.", param="prompt")
        plan = self._plan(request, request.output_token_limit, prompt_tokens, text, arrival, service_type)
        echo = text if request.echo else ""
        if request.stream:
            return self._stream(plan, _ChunkWriter(plan, self._encoded_pieces, chat=False, echo=echo))
        await self._run(plan)
        choice = CompletionChoice(text=echo + plan.output.text, finish_reason=plan.finish_reason)
        return CompletionResponse(model=plan.model, choices=[choice], usage=plan.usage())

    def _plan(
        self,
        request: ChatCompletionRequest | CompletionRequest,
        max_tokens: int | None,
        prompt_tokens: int,
        prompt_text: str,
        arrival: float,
        service_type: str | None,
    ) -> _Plan:
        if request.model not in self.served_model_names:
            raise ModelNotFoundError(request.model)
        output_tokens, finish_reason = self._output_length(max_tokens, prompt_tokens)
        self.failures.check_admission()
        engine_request = EngineRequest(prompt_tokens, output_tokens, finish_reason, request.seed, arrival)
        return _Plan(
            model=request.model,
            prompt_tokens=prompt_tokens,
            output=self.content.generate(prompt_text, output_tokens, request.seed, service_type),
            finish_reason=finish_reason,
            engine_request=engine_request,
            include_usage=request.include_usage,
            disconnect_after=self.failures.disconnect_after(output_tokens) if request.stream else None,
        )

    def _output_length(self, max_tokens: int | None, prompt_tokens: int) -> tuple[int, str]:
        """How many tokens to generate and the finish_reason, checked against the context length."""
        limit = self.profile.max_model_len
        if max_tokens is not None:
            if prompt_tokens + max_tokens > limit:
                raise ContextLengthError(
                    f"This model's maximum context length is {limit} tokens. However, you requested "
                    f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                    "completion). Please reduce the length of the messages or completion.",
                    param="max_tokens" if max_tokens > limit else "messages",
                )
            return max_tokens, "length"
        room = limit - prompt_tokens
        if room < 1:
            raise ContextLengthError(
                f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
                f"{prompt_tokens} tokens. Please reduce the length of the messages."
            )
        if room < self.default_max_tokens:
            return room, "length"
        return self.default_max_tokens, "stop"

    async def _run(self, plan: _Plan) -> None:
        async for _ in self.engine.generate(plan.engine_request):
            pass

    async def _stream(self, plan: _Plan, writer: _ChunkWriter) -> AsyncIterator[bytes]:
        pieces, total, cut = plan.output.pieces, len(plan.output.pieces), plan.disconnect_after
        tokens = self.engine.generate(plan.engine_request)
        sent = 0
        try:
            async for count in tokens:
                end = sent + count
                if cut is not None and end > cut:
                    if cut > sent:
                        yield writer.tokens(pieces, sent, cut, final=False)
                    raise StreamAborted(f"stream cut after {cut} of {total} tokens (injected)")
                yield writer.tokens(pieces, sent, end, final=end == total)
                sent = end
            if plan.include_usage:
                yield writer.usage(plan.usage())
            yield DONE_EVENT
        finally:
            await tokens.aclose()
