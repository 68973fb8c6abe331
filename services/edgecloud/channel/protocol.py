"""Wire models of the channel emulator's own endpoints (``/v1/ues``, ``/v1/cell``).

The OpenAI endpoints it fronts pass through unchanged; their models are in ``edgecloud.core.protocol``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ChannelWireModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UePlacement(ChannelWireModel):
    """Where to put a user, metres from the serving site (``PUT /v1/ues/{user_id}``)."""

    x_m: float = Field(strict=True, description="East of the serving site, metres.")
    y_m: float = Field(strict=True, description="North of the serving site, metres.")


class UeReport(ChannelWireModel):
    user_id: str
    cell: int = Field(description="Serving cell (0: the centre cell of the layout).")
    x_m: float
    y_m: float
    distance_m: float = Field(description="2D distance to the serving site.")
    los: bool
    path_loss_db: float
    shadowing_db: float
    mean_sinr_db: float = Field(description="Wideband SINR from large-scale gains (no fast fading).")
    average_throughput_bps: float = Field(description="The PF filter's average R_k (window pf_window_slots).")
    served_throughput_bps: float = Field(description="Delivered bits per second of backlog since attach.")
    delivered_bytes: float
    queued_bytes: float
    active_streams: int


class UeList(ChannelWireModel):
    object: str = "list"
    data: list[UeReport]


class CellReport(ChannelWireModel):
    channel_model: str
    scheduler: str
    time_s: float = Field(description="Air-interface time since the emulator started, seconds.")
    slot: int
    attached_ues: int
    backlogged_ues: int
    sum_throughput_bps: float = Field(description="Delivered bits per second, averaged over stats_window_s.")
    rb_utilisation: float = Field(description="Share of RBs carrying data, averaged over stats_window_s.")
    jain_fairness: float | None = Field(description="Jain's index of the users' served throughputs; null if none.")
    p5_user_throughput_bps: float | None = Field(description="5th percentile of the users' served throughputs.")
