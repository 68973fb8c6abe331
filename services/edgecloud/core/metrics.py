"""Histogram buckets shared by every service, copied from vLLM so our histograms line up with its.

Source: vLLM 0.32.0 ``vllm/v1/metrics/buckets.py`` (TIME_TO_FIRST_TOKEN_BUCKETS,
INTER_TOKEN_LATENCY_BUCKETS, REQUEST_LATENCY_BUCKETS), used by ``vllm:time_to_first_token_seconds``,
``vllm:inter_token_latency_seconds`` / ``vllm:request_time_per_output_token_seconds`` and
``vllm:e2e_request_latency_seconds``. ``tests/test_vllm_edge.py`` compares them with the installed vLLM.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import SecretStr
from starlette.responses import Response

from edgecloud.core.auth import require_key

TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TOKEN_LATENCY_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


def metrics_response(
    registry: CollectorRegistry, authorization: str | None = None, key: SecretStr | None = None
) -> Response:
    """The Prometheus text exposition of ``registry``, for a ``GET /metrics`` route; with ``key`` set, only
    for a scraper that presents it (Prometheus: ``authorization.credentials``)."""
    if key is not None:
        require_key(authorization, [key], "metrics key")
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
