"""What every service's app shares: the app around its service object, its command line, and running it
under uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Protocol, TypeVar

import uvicorn
from fastapi import FastAPI, Header
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsError

from edgecloud.core.connections import guarded_protocol
from edgecloud.core.errors import install_error_handlers
from edgecloud.core.hot_routes import ServiceApp
from edgecloud.core.ingress import IngressMiddleware
from edgecloud.core.metrics import metrics_response
from edgecloud.core.settings import ServerSettings


class ServiceMetrics(Protocol):
    """Whatever holds the registry a service's ``GET /metrics`` shows."""

    @property
    def registry(self) -> CollectorRegistry: ...


class AppService(Protocol):
    """What the app shell needs of a service object: start and close with the app, and its metrics."""

    @property
    def metrics(self) -> ServiceMetrics: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def service_app(
    title: str,
    service: AppService,
    settings: ServerSettings,
    health_fields: Callable[[], Mapping[str, Any]] | None = None,
) -> ServiceApp:
    """A FastAPI app (a ``ServiceApp``: its ``hot_routes`` skip the middleware stack) that starts and closes
    ``service`` with itself (``app.state.service``), answers every error in the OpenAI shape, stamps arrivals,
    refuses bodies over ``settings.max_body_bytes``, and serves ``GET /health`` (public; with ``health_fields``, the
    service's own) and ``GET /metrics`` (the service's registry, behind ``settings.metrics_api_key`` if set)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.close()

    app = ServiceApp(title=title, version="0.1.0", lifespan=lifespan, max_body_bytes=settings.max_body_bytes)
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(IngressMiddleware, max_body_bytes=settings.max_body_bytes)
    registry = service.metrics.registry

    @app.get("/health")
    async def liveness() -> dict[str, Any]:
        return {"status": "ok", **(health_fields() if health_fields is not None else {})}

    @app.get("/metrics")
    async def metrics(authorization: Annotated[str | None, Header()] = None) -> Response:
        return metrics_response(registry, authorization, settings.metrics_api_key)

    return app


SettingsT = TypeVar("SettingsT", bound=ServerSettings)
LISTEN_FLAGS = ("host", "port", "log_level")
"""The flags every service takes."""


def _flag_type(field: FieldInfo) -> Callable[[str], Any]:
    """An ``int`` setting (port, seed) is parsed as a number; other flags reach the settings as text, which
    they validate."""
    return int if field.annotation is int else str


@dataclass(frozen=True)
class CommandLine(Generic[SettingsT]):
    """A service's command line: ``--host``, ``--port``, ``--log-level`` and the settings named in ``flags``
    (``profiles_file`` is ``--profiles-file``), each over its environment variable, described as in the
    settings."""

    settings_class: type[SettingsT]
    prog: str
    description: str
    flags: tuple[str, ...] = ()

    def overrides(self, argv: Sequence[str] | None = None) -> dict[str, Any]:
        """The settings given in ``argv`` (default: the process's arguments), by name."""
        prefix = self.settings_class.model_config.get("env_prefix", "")
        parser = argparse.ArgumentParser(
            prog=self.prog, description=f"{self.description} (settings: {prefix}* environment variables)."
        )
        for name in (*LISTEN_FLAGS, *self.flags):
            field = self.settings_class.model_fields[name]
            description = (field.description or "").replace("%", "%%")  # argparse formats help with %
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                dest=name,
                type=_flag_type(field),
                help=f"{description} ({prefix}{name.upper()})",
            )
        return {name: value for name, value in vars(parser.parse_args(argv)).items() if value is not None}

    def settings(self, argv: Sequence[str] | None = None) -> SettingsT:
        """The settings, the command line over the environment; invalid ones end the process with the reason
        (no traceback)."""
        try:
            return self.settings_class(**self.overrides(argv))
        except (ValidationError, SettingsError) as error:
            raise SystemExit(f"{self.prog}: invalid settings\n{error}") from None


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


def serve(create_app: Callable[[SettingsT], FastAPI], settings: SettingsT) -> None:
    """Build the app and run it under uvicorn, logging set up first: what the app logs while it is built (a
    spool read back, a model loaded) goes through the same handler as uvicorn's own lines, in the same format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_LOG_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        log_config=None,
        http=guarded_protocol(settings.header_timeout_s, settings.max_connections),
    )
