"""The simulator over real HTTP: a server subprocess, the official ``openai`` client, raw SSE."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from edgecloud.llmsim.content import TokenCodec
from servers import ServerProcess

MODEL = "sim-zero"
MAX_MODEL_LEN = 600


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "LLMSIM_PORT": "{port}",
        "LLMSIM_PROFILE": "zero",
        "LLMSIM_MODEL": MODEL,
        "LLMSIM_SERVED_MODEL_ALIASES": '["sim-alias"]',
        "LLMSIM_DEFAULT_MAX_TOKENS": "24",
        "LLMSIM_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
        "LLMSIM_LOG_LEVEL": "warning",
    }
    log = tmp_path_factory.mktemp("llmsim") / "server.log"
    with ServerProcess("edgecloud.llmsim", env=env, log_path=log) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def codec() -> TokenCodec:
    return TokenCodec()


def chat_prompt_tokens(codec: TokenCodec, content: str) -> int:
    return codec.count(f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n")


def post(server: ServerProcess, path: str, body: Any = None, content: bytes | None = None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(server.base_url + path, json=body, content=content, headers=headers, timeout=10)


def test_health_and_models(server: ServerProcess, client: openai.OpenAI) -> None:
    assert httpx.get(server.base_url + "/health").json()["status"] == "ok"
    models = client.models.list()
    assert [model.id for model in models.data] == [MODEL, "sim-alias"]
    assert models.data[0].model_extra == {"max_model_len": MAX_MODEL_LEN}


def test_chat_completion_has_exactly_max_tokens(client: openai.OpenAI, codec: TokenCodec) -> None:
    question = "Why is the sky blue?"
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=37
    )
    choice = response.choices[0]
    assert response.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason == "length"
    assert response.usage is not None
    assert response.usage.completion_tokens == 37 == codec.count(choice.message.content or "")
    assert response.usage.prompt_tokens == chat_prompt_tokens(codec, question)
    assert response.usage.total_tokens == response.usage.prompt_tokens + 37
    assert (choice.message.content or "").startswith("The sky is blue")  # a corpus prompt gets its answer


def test_chat_stream_one_token_per_chunk_with_usage(client: openai.OpenAI, codec: TokenCodec) -> None:
    messages: Any = [{"role": "user", "content": "Tell me something."}]
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=50, seed=11, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [chunk for chunk in chunks[1:] if chunk.choices]
    assert len(content) == 50
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert [chunk.choices[0].finish_reason for chunk in content] == [None] * 49 + ["length"]
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == 50
    assert usage.usage.prompt_tokens == chat_prompt_tokens(codec, messages[0]["content"])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in content)
    assert codec.count(text) == 50
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=50, seed=11)
    assert whole.choices[0].message.content == text


def test_text_completion_stream_and_not(client: openai.OpenAI, codec: TokenCodec) -> None:
    response = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=20, seed=3)
    assert response.object == "text_completion"
    assert response.usage is not None
    assert (response.usage.completion_tokens, response.usage.prompt_tokens) == (20, codec.count("Once upon a time"))
    assert codec.count(response.choices[0].text) == 20
    chunks = list(client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=20, seed=3, stream=True))
    assert len(chunks) == 20 and chunks[-1].choices[0].finish_reason == "length"
    assert "".join(chunk.choices[0].text for chunk in chunks) == response.choices[0].text


def test_default_length_stops_and_max_completion_tokens_counts(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "hello"}]
    default = client.chat.completions.create(model=MODEL, messages=messages)
    assert default.usage is not None and default.usage.completion_tokens == 24
    assert default.choices[0].finish_reason == "stop"
    limited = client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=9)
    assert limited.usage is not None and limited.usage.completion_tokens == 9


def test_same_seed_same_content(client: openai.OpenAI) -> None:
    def ask(seed: int) -> str:
        messages: Any = [{"role": "user", "content": "Say something"}]
        response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=30, seed=seed)
        return response.choices[0].message.content or ""

    assert ask(5) == ask(5)
    assert ask(5) != ask(6)


def test_aliases_are_served(client: openai.OpenAI) -> None:
    response = client.completions.create(model="sim-alias", prompt="hi", max_tokens=2)
    assert response.model == "sim-alias" and response.usage is not None and response.usage.completion_tokens == 2


def test_raw_sse_framing(server: ServerProcess) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: ") for event in events[:-1])
    payloads = [json.loads(event[6:]) for event in events[:-2]]
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "usage" not in payloads[1]  # without include_usage, as OpenAI


def assert_error(response: httpx.Response, status: int, *, param: str | None = None, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code


def test_invalid_requests_get_openai_shaped_400s(server: ServerProcess) -> None:
    chat, user = "/v1/chat/completions", [{"role": "user", "content": "hi"}]
    assert_error(post(server, chat, content=b"{not json"), 400)
    assert_error(post(server, chat, {"model": MODEL}), 400, param="messages")
    assert_error(post(server, chat, {"model": MODEL, "messages": user, "max_tokens": "many"}), 400, param="max_tokens")
    assert_error(post(server, chat, {"model": MODEL, "messages": "hi"}), 400, param="messages")
    assert_error(post(server, chat, {"model": MODEL, "messages": user, "max_tokens": -1}), 400, param="max_tokens")
    assert_error(post(server, chat, {"model": MODEL, "messages": user, "n": 2}), 400, param="n")
    assert_error(post(server, "/v1/completions", {"model": MODEL, "prompt": ["a", "b"]}), 400, param="prompt")


def test_unknown_model_is_404(server: ServerProcess, client: openai.OpenAI) -> None:
    assert_error(post(server, "/v1/completions", {"model": "gpt-9", "prompt": "hi"}), 404, code="model_not_found")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="hi")


def test_context_length_is_enforced(server: ServerProcess, client: openai.OpenAI) -> None:
    user = [{"role": "user", "content": "hi"}]
    huge = post(server, "/v1/chat/completions", {"model": MODEL, "messages": user, "max_tokens": MAX_MODEL_LEN + 1})
    assert_error(huge, 400, param="max_tokens", code="context_length_exceeded")
    long_prompt = "word " * MAX_MODEL_LEN
    too_long = post(server, "/v1/completions", {"model": MODEL, "prompt": long_prompt, "max_tokens": 10})
    assert_error(too_long, 400, code="context_length_exceeded")
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=MODEL, prompt="word " * (MAX_MODEL_LEN - 10), max_tokens=20)
    assert raised.value.code == "context_length_exceeded"
    fits = client.completions.create(model=MODEL, prompt="word " * (MAX_MODEL_LEN - 30), max_tokens=20)
    assert fits.usage is not None and fits.usage.total_tokens <= MAX_MODEL_LEN


def test_metrics_use_vllm_names(server: ServerProcess, client: openai.OpenAI) -> None:
    client.completions.create(model=MODEL, prompt="count me", max_tokens=5)
    text = httpx.get(server.base_url + "/metrics").text
    for name in (
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:request_time_per_output_token_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:request_queue_time_seconds_bucket",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        'vllm:request_success_total{finished_reason="length",model_name="sim-zero"}',
    ):
        assert name in text, name
    generated = next(line for line in text.splitlines() if line.startswith("vllm:generation_tokens_total"))
    assert float(generated.split()[-1]) >= 5
