"""Exceptions raised by the service libraries, and the one place that turns them into HTTP.

Libraries raise these (they know nothing of HTTP); each app installs ``install_error_handlers``
so every failure, including malformed JSON and validation errors, leaves as an OpenAI-shaped
body with the right status, never as a bare 500. Like RouteLLM's ``RoutingError``.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from edgecloud.core.protocol import ErrorInfo, ErrorResponse

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of every error a service reports to its client."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    error_type: str = "internal_error"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers  # extra response headers (retry-after)

    def to_response(self) -> ErrorResponse:
        return error_body(self.message, self.error_type, param=self.param, code=self.code)


class BadRequestError(ServiceError):
    status = HTTPStatus.BAD_REQUEST
    error_type = "invalid_request_error"


class ContextLengthError(BadRequestError):
    """The prompt plus the requested output does not fit the model's context (OpenAI uses 400)."""

    def __init__(self, message: str, *, param: str | None = "messages"):
        super().__init__(message, param=param, code="context_length_exceeded")


class AuthenticationError(ServiceError):
    status = HTTPStatus.UNAUTHORIZED
    error_type = "authentication_error"


class PermissionDeniedError(ServiceError):
    status = HTTPStatus.FORBIDDEN
    error_type = "permission_error"


class NotFoundError(ServiceError):
    status = HTTPStatus.NOT_FOUND
    error_type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    def __init__(self, model: str):
        super().__init__(f"The model '{model}' does not exist.", param="model", code="model_not_found")


class RateLimitError(ServiceError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    error_type = "rate_limit_error"


class UpstreamError(ServiceError):
    """A backend answered with an error of its own or with something that is not the API."""

    status = HTTPStatus.BAD_GATEWAY
    error_type = "upstream_error"


class RelayedError(ServiceError):
    """A client error a backend reported (bad request, context too long, rate limit), passed on as it was."""

    def __init__(
        self, status: int, message: str, error_type: str, *, param: str | None = None, code: str | None = None
    ):
        super().__init__(message, param=param, code=code)
        self.status = HTTPStatus(status)
        self.error_type = error_type


class PayloadTooLargeError(ServiceError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    error_type = "invalid_request_error"


class MethodNotAllowedError(ServiceError):
    status = HTTPStatus.METHOD_NOT_ALLOWED
    error_type = "invalid_request_error"


class UnsupportedMediaTypeError(ServiceError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    error_type = "invalid_request_error"


class UpstreamUnavailableError(UpstreamError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    error_type = "service_unavailable"


class UpstreamTimeoutError(UpstreamError):
    status = HTTPStatus.GATEWAY_TIMEOUT
    error_type = "timeout"


def error_body(message: str, error_type: str, *, param: str | None = None, code: str | None = None) -> ErrorResponse:
    return ErrorResponse(error=ErrorInfo(message=message, type=error_type, param=param, code=code))


def error_response(status: int, body: ErrorResponse, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _status_error_type(status: int) -> str:
    if status == HTTPStatus.NOT_FOUND:
        return "not_found_error"
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        return "invalid_request_error"
    return "invalid_request_error" if status < 500 else "internal_error"


def _validation_param(errors: list[dict[str, Any]]) -> str | None:
    if errors and errors[0].get("type") == "json_invalid":
        return None
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        if location:
            return ".".join(location)
    return None


def _validation_message(errors: list[dict[str, Any]]) -> str:
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON."
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    return f"Invalid value for '{location}': {first.get('msg', 'invalid request')}."


def error_of(exc: Exception) -> tuple[int, ErrorResponse, dict[str, str] | None]:
    """The status, OpenAI-shaped body and extra headers that answer ``exc``; an unexpected one is logged and is a 500
    that says nothing of it."""
    if isinstance(exc, ServiceError):
        return exc.status, exc.to_response(), exc.headers
    if isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        body = error_body(_validation_message(errors), "invalid_request_error", param=_validation_param(errors))
        return HTTPStatus.BAD_REQUEST, body, None
    if isinstance(exc, StarletteHTTPException):
        body = error_body(str(exc.detail), _status_error_type(exc.status_code))
        return exc.status_code, body, getattr(exc, "headers", None)
    logger.exception("unhandled error", exc_info=exc)
    body = error_body("The server had an error while processing the request.", "internal_error")
    return HTTPStatus.INTERNAL_SERVER_ERROR, body, None


def install_error_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` an OpenAI-shaped JSON body with its proper status."""

    async def _error(_: Request, exc: Exception) -> JSONResponse:
        status, body, headers = error_of(exc)
        return error_response(status, body, headers=headers)

    for handled in (ServiceError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(handled, _error)

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request: Request, _: ClientDisconnect) -> Response:
        """A client that hangs up mid-upload is expected behaviour: one line, no traceback, nobody to answer."""
        logger.info("client disconnected before its request was complete: %s %s", request.method, request.url.path)
        return Response(status_code=HTTPStatus.BAD_REQUEST)
