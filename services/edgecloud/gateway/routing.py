"""The two backends, and the route a client pins: an ``x-route`` header, or a backend's own model name.

Requests for the auto model are routed by the decision service (``decisions.py``, asked by ``service.py``);
``RouteSelector`` gives the default route only when no decision service is configured."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from edgecloud.core.errors import BadRequestError, ModelNotFoundError
from edgecloud.core.headers import ROUTE_HEADER
from edgecloud.core.protocol import ModelCard
from edgecloud.gateway.settings import GatewaySettings, Route


@dataclass(frozen=True)
class Backend:
    """An OpenAI-compatible upstream: the edge LLM or the cloud LLM."""

    route: Route
    base_url: str
    model: str
    max_model_len: int
    api_key: SecretStr | None = None


class RouteSelector:
    """Picks the backend: an ``x-route`` header wins, then a backend's own model name, then the default."""

    def __init__(self, settings: GatewaySettings):
        self.auto_model = settings.auto_model
        self.default_route = settings.default_route
        self.backends = {
            Route.EDGE: Backend(
                Route.EDGE, settings.edge_url, settings.edge_model, settings.edge_max_model_len, settings.edge_api_key
            ),
            Route.CLOUD: Backend(
                Route.CLOUD,
                settings.cloud_url,
                settings.cloud_model,
                settings.cloud_max_model_len,
                settings.cloud_api_key,
            ),
        }

    def models(self) -> list[ModelCard]:
        """The auto model first, then each backend's model, as ``GET /v1/models`` lists them."""
        longest = max(backend.max_model_len for backend in self.backends.values())
        cards = [ModelCard(id=self.auto_model, max_model_len=longest)]
        cards += [
            ModelCard(id=backend.model, owned_by=f"edgecloud-{backend.route}", max_model_len=backend.max_model_len)
            for backend in self.backends.values()
        ]
        return cards

    def select(self, model: str, route_header: str | None) -> Backend:
        if route_header:
            try:
                return self.backends[Route(route_header.strip().lower())]
            except ValueError:
                raise BadRequestError(
                    f"Invalid x-route header {route_header!r}: expected one of {[r.value for r in Route]}.",
                    param=ROUTE_HEADER,
                ) from None
        if model == self.auto_model:
            return self.backends[self.default_route]
        for backend in self.backends.values():
            if model == backend.model:
                return backend
        raise ModelNotFoundError(model)
