"""Send one real prompt over the air interface, streamed, and measure TTFT and TPOT as the user sees them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx

from edgecloud.core.headers import BACKEND_MODEL_HEADER, DECISION_SOURCE_HEADER, ROUTE_HEADER, SERVICE_TYPE_HEADER

DEMO_USER = "testbed-demo"  # the OpenAI 'user' field: the channel emulator's user id


@dataclass
class DemoResult:
    answer: str
    route: str
    backend_model: str
    service_type: str
    decision_source: str
    ttft_s: float
    tpot_s: float | None
    output_tokens: int

    def summary(self) -> str:
        tpot = "n/a" if self.tpot_s is None else f"{self.tpot_s * 1000:.1f} ms"
        return (
            f"type={self.service_type} decision={self.decision_source} "
            f"route={self.route} model={self.backend_model} tokens={self.output_tokens} "
            f"TTFT={self.ttft_s * 1000:.0f} ms TPOT={tpot}"
        )


def ask(base_url: str, model: str, prompt: str, max_tokens: int, timeout_s: float = 120.0) -> DemoResult:
    """Stream a chat completion; TPOT = (last token - first token) / (tokens - 1), as vLLM defines it."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": DEMO_USER,
    }
    pieces: list[str] = []
    first = last = None
    tokens = 0
    started = time.perf_counter()
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, timeout=timeout_s) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                text = choice.get("delta", {}).get("content")
                if text:
                    last = time.perf_counter()
                    first = first or last
                    pieces.append(text)
        headers = response.headers
    if first is None or last is None:
        raise RuntimeError("no tokens were streamed")
    return DemoResult(
        answer="".join(pieces).strip(),
        route=headers.get(ROUTE_HEADER, "?"),
        backend_model=headers.get(BACKEND_MODEL_HEADER, "?"),
        service_type=headers.get(SERVICE_TYPE_HEADER, "?"),
        decision_source=headers.get(DECISION_SOURCE_HEADER, "?"),
        ttft_s=first - started,
        tpot_s=(last - first) / (tokens - 1) if tokens > 1 else None,
        output_tokens=tokens,
    )
