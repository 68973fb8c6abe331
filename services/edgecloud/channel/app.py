"""The channel emulator's HTTP shell: the air interface in front of the gateway, plus its own views."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import Response

from edgecloud.channel.metrics import ChannelMetrics
from edgecloud.channel.protocol import CellReport, UeList, UePlacement, UeReport
from edgecloud.channel.service import AirService, Answer
from edgecloud.channel.settings import ChannelSettings
from edgecloud.core.auth import require_service_key
from edgecloud.core.openapi import install_openapi
from edgecloud.core.protocol import GENERATION_REQUESTS
from edgecloud.core.server import CommandLine, serve, service_app
from edgecloud.core.streaming import WatchedStreamingResponse

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
COMMAND_LINE = CommandLine(
    ChannelSettings, "edgecloud-channel", "Channel emulator: the air interface in front of the gateway"
)


def _to_response(answer: Answer) -> Response:
    if isinstance(answer.content, bytes):
        return Response(answer.content, status_code=answer.status, headers=answer.headers)
    headers = {**STREAM_HEADERS, **answer.headers}
    return WatchedStreamingResponse(answer.content, headers, answer.status, answer.media_type or "application/json")


def create_app(settings: ChannelSettings) -> FastAPI:
    service = AirService(settings, ChannelMetrics())
    app = service_app("edgecloud channel emulator", service, settings)

    async def _generate(raw: Request) -> Response:
        air: AirService = raw.app.state.service
        client_host = raw.client.host if raw.client else None
        answer = await air.forward("POST", raw.url.path, await raw.body(), raw.headers, client_host, raw.state.arrived)
        return _to_response(answer)

    for path in GENERATION_REQUESTS:
        app.add_api_route(path, _generate, methods=["POST"], summary=f"OpenAI {path}, paced over the air")

    @app.get("/v1/models")
    async def models(raw: Request) -> Response:
        return _to_response(await raw.app.state.service.passthrough("GET", "/v1/models", b"", raw.headers))

    @app.get("/v1/ues")
    async def ues(raw: Request) -> UeList:
        return UeList(data=raw.app.state.service.ue_reports())

    @app.get("/v1/ues/{user_id}")
    async def ue(raw: Request, user_id: str) -> UeReport:
        return raw.app.state.service.ue_report(user_id)

    @app.put("/v1/ues/{user_id}")
    async def place_ue(raw: Request, user_id: str, placement: UePlacement) -> UeReport:
        """Radio control, for the operator only: a client could otherwise move another user out of coverage."""
        require_service_key(raw.headers.get("authorization"), settings.admin_api_key, "radio admin key", False)
        return raw.app.state.service.place(user_id, placement)

    @app.get("/v1/cell")
    async def cell(raw: Request) -> CellReport:
        return raw.app.state.service.cell_report()

    install_openapi(app, GENERATION_REQUESTS, streams=frozenset(GENERATION_REQUESTS))
    return app


def main(argv: Sequence[str] | None = None) -> None:
    settings = COMMAND_LINE.settings(argv)
    serve(create_app, settings)
