"""Each service's OpenAPI document as the service really behaves (checked by schemathesis in the tests).

FastAPI's own document is wrong for these services in three ways, each fixed here: bodies parsed by hand
(for speed: the gateway, the air interface) are not declared, and the nested models of a declared one
were referenced but missing; it promises 422 where the error handlers answer 400; and the errors every
endpoint can answer (401, 403, 413, 415, 429, 503 ...) in the OpenAI shape are not there at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from edgecloud.core.protocol import ErrorResponse

REF = "#/components/schemas/{model}"
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
METRICS_PATH = "/metrics"
PROMETHEUS_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _add_component(components: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    """Put ``model`` and the models it nests among the components; return a reference to it."""
    schema = model.model_json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _hot_operation(path: str) -> dict[str, Any]:
    """What FastAPI would write for ``POST path`` (``/v1/chat/completions``: summary ``Chat Completions``)."""
    return {
        "summary": path.rsplit("/v1/", 1)[-1].replace("/", " ").replace("_", " ").title(),
        "operationId": path.strip("/").replace("/", "_") + "_post",
        "responses": {"200": {"description": "The answer", "content": _json({})}},
    }


def install_openapi(
    app: FastAPI,
    request_bodies: Mapping[str, type[BaseModel]] | None = None,
    streams: frozenset[str] = frozenset(),
    property_enums: Mapping[str, Callable[[], list[str]]] | None = None,
) -> None:
    """Serve a corrected document: ``request_bodies`` (path: model) are the POST bodies read by hand,
    ``streams`` the paths that may answer ``text/event-stream`` as well as JSON, ``property_enums`` the values a
    property of that name takes in every body, known to the service but not to the shared model (the
    decision service's policies)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for path, model in (request_bodies or {}).items():
            body = {"required": True, "content": _json(_add_component(components, model))}
            # A hot route (``core.hot_routes``) is no FastAPI route: its operation is written here.
            operation = document["paths"].setdefault(path, {}).setdefault("post", _hot_operation(path))
            operation["requestBody"] = body
        error = {
            "description": "An error, in the OpenAI shape",
            "content": _json(_add_component(components, ErrorResponse)),
        }
        for path, operations in document["paths"].items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if responses.pop("422", None) is not None:
                    responses["400"] = {**error, "description": "Invalid request (the OpenAI shape)"}
                responses["default"] = error
                if path == METRICS_PATH:
                    responses["200"] = {"description": "Prometheus text format", "content": PROMETHEUS_TEXT}
                if path in streams:
                    answer = responses.setdefault("200", {"description": "The answer"})
                    answer["content"] = {**_json({}), "text/event-stream": {"schema": {"type": "string"}}}
        for name in FASTAPI_VALIDATION_SCHEMAS:
            components.pop(name, None)
        for component in components.values():
            for name, values in (property_enums or {}).items():
                if name in component.get("properties", {}):
                    component["properties"][name]["enum"] = values()
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
