"""Every ``x-*`` header the services and their clients exchange: the one place to add or rename one.

Request headers a client (or the air interface in front of it) may send to the gateway, response headers
the gateway answers with, and the ones the air interface adds. docs/gateway.md and README.md describe
each for users; HTTP header names are case-insensitive, these are the lower-case forms.
"""

from __future__ import annotations

JSON_CONTENT = {"content-type": "application/json"}
"""The content type of every JSON body one service posts to another."""

# --- to the gateway, from clients --------------------------------------------------------------
ROUTE_HEADER = "x-route"
"""``edge`` or ``cloud``: the client pins the route (the gateway answers with the route it took)."""
SERVICE_TYPE_HEADER = "x-service-type"
"""The request's service type; the gateway answers with the type it served as and sends it to its backends,
whose simulator then answers with text of that type (vLLM ignores it)."""
QUALITY_REQUIREMENT_HEADER = "x-quality-requirement"
"""The quality index the answer must reach (constraint 4e); the gateway answers with the one it applied."""
REQUEST_ID_HEADER = "x-request-id"
"""The request's id, echoed back; it joins the air interface's measurement to the gateway's."""
MAX_REQUEST_ID_LENGTH = 128
REQUEST_ID_PATTERN = rf"^[A-Za-z0-9_.:-]{{1,{MAX_REQUEST_ID_LENGTH}}}$"

# --- to the gateway, from the air interface ----------------------------------------------------
AIR_INTERFACE_HEADER = "x-air-interface"
"""Set by the channel emulator on every request it forwards: its transmission time will be reported."""

# --- from the gateway --------------------------------------------------------------------------
BACKEND_MODEL_HEADER = "x-backend-model"
GATEWAY_OVERHEAD_MS_HEADER = "x-gateway-overhead-ms"
ESTIMATED_TOKENS_HEADER = "x-estimated-tokens"
DECISION_SOURCE_HEADER = "x-decision-source"
DECISION_LATENCY_MS_HEADER = "x-decision-latency-ms"
QUALITY_MET_HEADER = "x-quality-met"
"""``true`` when the serving model meets the requirement (constraint 4e)."""
RETRIED_FROM_HEADER = "x-retried-from"
"""The route that failed before its first token, when the other side served the request."""

# --- to the air interface, from clients, and from it -------------------------------------------
USER_ID_HEADER = "x-user-id"
"""The radio user a client speaks for (else the body's OpenAI ``user``); the air interface's default."""
CHANNEL_USER_HEADER = "x-channel-user"
"""The radio user the air interface served the answer to."""
CHANNEL_BACKHAUL_MS_HEADER = "x-channel-backhaul-ms"
"""The backhaul delay t_back (eq. 1) the air interface added to the answer."""
