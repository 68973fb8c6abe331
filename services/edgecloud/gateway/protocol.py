"""Wire models of the gateway's own endpoint (``/v1/air-reports``); the OpenAI ones are in ``core.protocol``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Headers between the air interface and the gateway.
AIR_INTERFACE_HEADER = "x-air-interface"  # set by the channel emulator on every request it forwards
REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128


class AirReport(BaseModel):
    """What the air interface measured of one request, joined with the gateway's measurement by id."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=MAX_REQUEST_ID_LENGTH)
    transmission_s: float = Field(
        ge=0, le=86_400, allow_inf_nan=False, strict=True, description="t_tran of eq. 1 as measured over the air."
    )
