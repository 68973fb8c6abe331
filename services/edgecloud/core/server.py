"""What every service's app shares: the app around its service object, and running it under uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI

from edgecloud.core.connections import guarded_protocol
from edgecloud.core.errors import install_error_handlers
from edgecloud.core.ingress import IngressMiddleware
from edgecloud.core.settings import ServerSettings


class StartableService(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


def service_app(title: str, service: StartableService, max_body_bytes: int) -> FastAPI:
    """A FastAPI app that starts and closes ``service`` with itself (``app.state.service``), answers every
    error in the OpenAI shape, stamps arrivals and refuses bodies over ``max_body_bytes``."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.close()

    app = FastAPI(title=title, version="0.1.0", lifespan=lifespan)
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(IngressMiddleware, max_body_bytes=max_body_bytes)
    return app


TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line (``log_format: json``): time, level, logger, message, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def serve(app: FastAPI, settings: ServerSettings) -> None:
    """Run ``app`` under uvicorn; uvicorn's own lines go through the same handler, in the same format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_LOG_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        log_config=None,
        http=guarded_protocol(settings.header_timeout_s, settings.max_connections),
    )


def listen_overrides(description: str, env_prefix: str) -> dict[str, Any]:
    """``--host`` and ``--port`` from the command line, as settings overrides (they beat the environment)."""
    parser = argparse.ArgumentParser(description=f"{description} (settings: {env_prefix}* environment variables).")
    parser.add_argument("--host", help=f"listen address ({env_prefix}HOST)")
    parser.add_argument("--port", type=int, help=f"listen port ({env_prefix}PORT)")
    return {key: value for key, value in vars(parser.parse_args()).items() if value is not None}
