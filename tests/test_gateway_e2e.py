"""The gateway over real HTTP with the official openai client, in front of real simulator processes."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import httpx
import openai
import pytest

from conftest import start_gateway, start_simulator
from edgecloud.testbed.processes import free_port

MESSAGES = [{"role": "user", "content": "Translate 'good morning' into French."}]


@pytest.fixture(scope="module")
def client(sim_stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim_stack.gateway_url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_models_lists_auto_and_both_backends(client, sim_stack):
    ids = [model.id for model in client.models.list()]
    assert ids == ["edgecloud-auto", sim_stack.edge_model, sim_stack.cloud_model]


@pytest.mark.parametrize(("route", "model_key"), [("edge", "edge_model"), ("cloud", "cloud_model")])
def test_chat_non_streaming_by_route_header(client, sim_stack, route, model_key):
    raw = client.chat.completions.with_raw_response.create(
        model="edgecloud-auto", messages=MESSAGES, max_tokens=10, extra_headers={"x-route": route}
    )
    completion = raw.parse()
    assert raw.headers["x-route"] == route
    assert raw.headers["x-backend-model"] == getattr(sim_stack, model_key)
    assert 0 <= float(raw.headers["x-gateway-overhead-ms"]) < 1000
    assert completion.usage.completion_tokens == 10
    assert completion.choices[0].message.content


def test_chat_streaming_with_usage(client, sim_stack):
    stream = client.chat.completions.create(
        model=sim_stack.cloud_model,
        messages=MESSAGES,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 8


def test_chat_streaming_without_usage_has_no_usage_chunk(client, sim_stack):
    chunks = list(client.chat.completions.create(model=sim_stack.edge_model, messages=MESSAGES, max_tokens=5,
                                                 stream=True))  # fmt: skip
    assert chunks and all(chunk.usage is None and chunk.choices for chunk in chunks)


def test_completions_streaming_and_not(client, sim_stack):
    completion = client.completions.create(model=sim_stack.edge_model, prompt="Once upon a time", max_tokens=7)
    assert completion.usage.completion_tokens == 7
    stream = client.completions.create(
        model=sim_stack.edge_model, prompt="Once upon a time", max_tokens=7, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == 7


def test_streaming_is_relayed_chunk_by_chunk(sim_stack):
    """Chunks reach the client spread over the generation time, not in one burst at the end."""
    body = {"model": sim_stack.cloud_model, "messages": MESSAGES, "max_tokens": 20, "stream": True}
    arrivals = []
    with httpx.stream("POST", f"{sim_stack.gateway_url}/v1/chat/completions", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.perf_counter())
    # The GPT-4o profile's TPOT is 1/32 s: 19 gaps take about 0.6 s; a buffered relay would show ~0.
    assert arrivals[-1] - arrivals[0] > 0.3


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        (b"{not json", None),
        (b'{"model": "edgecloud-auto"}', "messages"),
        (b'{"model": "edgecloud-auto", "messages": "hi"}', "messages"),
        (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "edgecloud-auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}',
         "max_tokens"),
        (b'{"model": "edgecloud-auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}',
         "max_tokens"),
        (b'{"model": "edgecloud-auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": 99999999}',
         "max_tokens"),
        (b'[1, 2, 3]', None),
    ],
)  # fmt: skip
def test_bad_input_is_an_openai_shaped_400(sim_stack, payload, param):
    response = httpx.post(
        f"{sim_stack.gateway_url}/v1/chat/completions",
        content=payload,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    error = _error(response)
    if param is not None:
        assert error["param"] == param


def test_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-5-imaginary", messages=MESSAGES)
    assert caught.value.body["code"] == "model_not_found"


def test_prompt_over_context_length_is_a_400(client, sim_stack):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=sim_stack.edge_model, prompt="word " * 9000, max_tokens=5)
    assert caught.value.body["code"] == "context_length_exceeded"


def test_unknown_path_and_oversized_body(sim_stack):
    assert _error(httpx.get(f"{sim_stack.gateway_url}/v1/nothing-here")) is not None
    huge = b'{"model": "x", "prompt": "' + b"a" * (5 * 1024 * 1024) + b'"}'
    response = httpx.post(f"{sim_stack.gateway_url}/v1/completions", content=huge,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 413
    _error(response)


def test_gateway_metrics_after_traffic(client, sim_stack):
    list(client.chat.completions.create(model=sim_stack.edge_model, messages=MESSAGES, max_tokens=4, stream=True))
    text = httpx.get(f"{sim_stack.gateway_url}/metrics").text
    # MESSAGES is a translation request: the classifier labels it so.
    labels = f'model="{sim_stack.edge_model}",route="edge",service_type="translation"'
    for name in ("time_to_first_token_seconds", "inter_token_latency_seconds",
                 "request_time_per_output_token_seconds", "e2e_request_latency_seconds"):  # fmt: skip
        assert f"edgecloud_gateway_{name}_count{{{labels}}}" in text
    assert (
        f'edgecloud_gateway_requests_total{{model="{sim_stack.edge_model}",outcome="success",route="edge",service_type="translation"}}'
        in text
    )
    assert f"edgecloud_gateway_generation_tokens_total{{{labels}}}" in text


def test_gateway_ttft_includes_the_backend_ttft(client, sim_stack):
    """The edge profile's TTFT is 0.23 s; the gateway's own TTFT histogram must see at least that."""
    list(client.chat.completions.create(model=sim_stack.edge_model, messages=MESSAGES, max_tokens=3, stream=True))
    text = httpx.get(f"{sim_stack.gateway_url}/metrics").text
    labels = f'model="{sim_stack.edge_model}",route="edge",service_type="translation"'
    count = float(_sample(text, f"edgecloud_gateway_time_to_first_token_seconds_count{{{labels}}}"))
    total = float(_sample(text, f"edgecloud_gateway_time_to_first_token_seconds_sum{{{labels}}}"))
    assert total / count > 0.2


def _sample(text: str, series: str) -> str:
    return next(line.split()[-1] for line in text.splitlines() if line.startswith(series + " "))


# --- backends that fail -------------------------------------------------------------------------


class SilentServer:
    """Accepts TCP connections and never answers: a backend that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.connections.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture(scope="module")
def failing_gateway(tmp_path_factory):
    """Edge: nothing listens (down). Cloud: accepts but never answers (hung). Read timeout 1 s."""
    logs = tmp_path_factory.mktemp("failing")
    silent = SilentServer()
    gateway, url = start_gateway(
        logs,
        edge_url=f"http://127.0.0.1:{free_port()}/v1",
        cloud_url=f"http://127.0.0.1:{silent.port}/v1",
        read_timeout_s="1.0",
        connect_timeout_s="1.0",
        retry_other_side="false",
    )
    yield url
    gateway.stop()
    silent.close()


@pytest.mark.parametrize(("route", "status"), [("edge", 503), ("cloud", 504)])
def test_backend_down_or_hung_fails_fast_then_pinned_requests_are_refused_at_once(failing_gateway, route, status):
    body = {"model": "edgecloud-auto", "messages": MESSAGES, "max_tokens": 5}
    started = time.perf_counter()
    response = httpx.post(f"{failing_gateway}/v1/chat/completions", json=body, headers={"x-route": route}, timeout=10)
    assert time.perf_counter() - started < 3.0
    assert response.status_code == status
    assert route in _error(response)["message"]
    # The failure marked the backend down; a request pinned to it is not sent elsewhere, nor made to wait.
    started = time.perf_counter()
    pinned = httpx.post(
        f"{failing_gateway}/v1/chat/completions", json={**body, "stream": True}, headers={"x-route": route}, timeout=10
    )
    assert time.perf_counter() - started < 0.5
    assert pinned.status_code == 503 and _error(pinned)["code"] == "backend_down"
    assert route in _error(pinned)["message"] and int(pinned.headers["retry-after"]) >= 1


def test_a_hung_edge_costs_the_first_token_timeout_once_then_nothing(tmp_path):
    """Edge accepts and never answers; auto requests pay the 1 s first-token timeout once, then go to the cloud."""
    silent = SilentServer()
    cloud, cloud_url = start_simulator(tmp_path, "zero")
    gateway, url = start_gateway(
        tmp_path,
        edge_url=f"http://127.0.0.1:{silent.port}/v1",
        cloud_url=cloud_url,
        cloud_model="zero",
        default_route="edge",
        first_token_timeout_s="1.0",
        backend_down_s="30",
    )
    try:
        body = {"model": "edgecloud-auto", "messages": MESSAGES, "max_tokens": 5, "stream": True}
        waits, sources = [], []
        for _ in range(5):
            started = time.perf_counter()
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
                assert response.status_code == 200
                assert "data: [DONE]" in response.read().decode()
                waits.append(time.perf_counter() - started)
                sources.append((response.headers["x-route"], response.headers.get("x-retried-from"),
                                response.headers["x-decision-source"]))  # fmt: skip
        assert 1.0 <= waits[0] < 2.0, waits  # the first-token timeout, then the cloud
        assert sources[0] == ("cloud", "edge", "default_route")
        assert max(waits[1:]) < 0.5, waits  # the edge is marked down: nothing paid
        assert set(sources[1:]) == {("cloud", None, "backend_down")}
        assert 'edgecloud_gateway_backend_down{route="edge"} 1.0' in httpx.get(f"{url}/metrics").text
    finally:
        gateway.stop()
        cloud.stop()
        silent.close()


@pytest.fixture(scope="module")
def flaky_stack(tmp_path_factory):
    """One simulator per failure mode, each at rate 1.0, behind one gateway (edge: 429, cloud: cut streams)."""
    logs = tmp_path_factory.mktemp("flaky")
    limited, limited_url = start_simulator(logs, "zero", fail_429_rate="1.0")
    cut, cut_url = start_simulator(logs, "zero", fail_disconnect_rate="1.0")
    gateway, url = start_gateway(
        logs, edge_url=limited_url, edge_model="zero", cloud_url=cut_url, cloud_model="zero", retry_other_side="false"
    )
    yield url
    for process in (gateway, cut, limited):
        process.stop()


def test_backend_rate_limit_is_passed_on_as_429(flaky_stack):
    client = openai.OpenAI(base_url=f"{flaky_stack}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="edgecloud-auto", messages=MESSAGES, extra_headers={"x-route": "edge"})


def test_stream_cut_by_backend_ends_with_an_error_event(flaky_stack):
    client = openai.OpenAI(base_url=f"{flaky_stack}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="edgecloud-auto", messages=MESSAGES, max_tokens=50, stream=True, extra_headers={"x-route": "cloud"}
    )
    with pytest.raises(openai.APIError, match="closed the stream"):
        list(stream)
    text = httpx.get(f"{flaky_stack}/metrics").text
    assert 'outcome="upstream_disconnect",route="cloud"' in text


def test_client_api_keys_are_enforced(tmp_path):
    gateway, url = start_gateway(tmp_path, api_keys='["s3cret"]')
    try:
        denied = httpx.get(f"{url}/v1/models", headers={"authorization": "Bearer wrong"})
        assert denied.status_code == 401
        _error(denied)
        assert httpx.get(f"{url}/v1/models", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert "s3cret" not in gateway.log_path.read_text()
    finally:
        gateway.stop()


def test_client_that_leaves_mid_stream_frees_the_backend(sim_stack):
    """The upstream request is aborted at once: the backend's running count drops back to zero."""
    body = {"model": sim_stack.cloud_model, "messages": MESSAGES, "max_tokens": 500, "stream": True}
    with httpx.stream("POST", f"{sim_stack.gateway_url}/v1/chat/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
        running = _sample(httpx.get(f"{sim_stack.cloud_url.removesuffix('/v1')}/metrics").text,
                          f'vllm:num_requests_running{{model_name="{sim_stack.cloud_model}"}}')  # fmt: skip
        assert float(running) == 1.0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        backend = httpx.get(f"{sim_stack.cloud_url.removesuffix('/v1')}/metrics").text
        if float(_sample(backend, f'vllm:num_requests_running{{model_name="{sim_stack.cloud_model}"}}')) == 0.0:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the backend still runs the abandoned request")
    gateway = httpx.get(f"{sim_stack.gateway_url}/metrics").text
    assert 'outcome="client_disconnect",route="cloud"' in gateway


def test_a_named_model_is_never_replaced_and_a_client_error_is_not_retried(tmp_path):
    """Cloud down: a request naming the cloud's model fails and says so (before: the edge answered it)."""
    edge, edge_url = start_simulator(tmp_path, "zero")
    gateway, url = start_gateway(
        tmp_path, edge_url=edge_url, edge_model="zero", cloud_url=f"http://127.0.0.1:{free_port()}/v1",
        cloud_model="gpt-4o-cloud",
    )  # fmt: skip
    try:
        named = httpx.post(f"{url}/v1/chat/completions", json={"model": "gpt-4o-cloud", "messages": MESSAGES})
        assert named.status_code == 503, named.text
        assert "cloud backend" in _error(named)["message"]
        assert "x-backend-model" not in named.headers
        # Negative token ids, and an integer sent as a string: 400 at the gateway, nothing sent on.
        for body in (
            {"model": "zero", "prompt": [-1, 5]},
            {"model": "zero", "messages": MESSAGES, "max_tokens": "8"},
        ):
            path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
            refused = httpx.post(f"{url}{path}", json=body)
            assert refused.status_code == 400, refused.text
        assert "edgecloud_gateway_retries_total{" not in httpx.get(f"{url}/metrics").text
    finally:
        gateway.stop()
        edge.stop()


def test_a_client_that_hangs_up_mid_upload_costs_one_log_line_and_json_logs_parse(tmp_path):
    """Before: about 120 lines of tracebacks per client that hung up mid-upload."""
    gateway, url = start_gateway(tmp_path, log_format="json", classify_prompts="false")
    try:
        host, port = url.removeprefix("http://").split(":")
        for _ in range(3):
            with socket.create_connection((host, int(port))) as connection:
                connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json"
                                   b"\r\nContent-Length: 1000\r\n\r\n{\"model\": ")  # fmt: skip
                time.sleep(0.2)
        deadline = time.monotonic() + 5
        while gateway.log_path.read_text().count("client disconnected") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        gateway.stop()
    lines = gateway.log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, uvicorn's too, is one JSON object
    disconnects = [entry for entry in entries if "client disconnected" in entry["message"]]
    assert len(disconnects) == 3 and {entry["level"] for entry in disconnects} == {"INFO"}
    assert not [entry for entry in entries if "exception" in entry or "Traceback" in entry["message"]]


def open_descriptors(server) -> int:
    popen = server.process.popen
    assert popen is not None
    return len(os.listdir(f"/proc/{popen.pid}/fd"))


def test_slow_loris_connections_neither_exhaust_descriptors_nor_lock_others_out(tmp_path):
    """Before: 5,000 idle or slow connections were all held; 20,200 exhausted the descriptors, requests failed."""
    cap, flood, header_timeout_s = 300, 2000, 8.0
    edge, edge_url = start_simulator(tmp_path, "zero")
    gateway, url = start_gateway(
        tmp_path, edge_url=edge_url, edge_model="zero", classify_prompts="false",
        max_connections=str(cap), header_timeout_s=str(header_timeout_s),
    )  # fmt: skip
    host, port = url.removeprefix("http://").split(":")
    idle: list[socket.socket] = []
    try:
        baseline = open_descriptors(gateway)
        started = time.monotonic()
        for index in range(flood):  # half send nothing, half a request line and then nothing more
            connection = socket.create_connection((host, int(port)))
            if index % 2:
                connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
            idle.append(connection)
        peak = open_descriptors(gateway)
        body = {"model": "zero", "messages": MESSAGES, "max_tokens": 4}
        answered = sum(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).status_code == 200
                       for _ in range(100))  # fmt: skip
        peak = max(peak, open_descriptors(gateway))
        assert time.monotonic() - started < header_timeout_s  # all of it while the flood was still open
        assert answered >= 99, answered
        assert peak <= baseline + cap + 10, (baseline, peak)
        time.sleep(header_timeout_s + 1)  # what the cap did not close, the header deadline does
        assert open_descriptors(gateway) <= baseline + 10
    finally:
        for connection in idle:
            connection.close()
        gateway.stop()
        edge.stop()
    log = gateway.log_path.read_text()
    assert "connections open (the cap)" in log and "request headers took over 8 s" in log
