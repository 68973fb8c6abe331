"""Named latency profiles: the parameters of the latency model, read from a YAML file.

A profile is plain data (``LatencyProfile``); ``data/profiles.yaml`` documents every field in its
header comment and gives each profile a ``source``. The model that uses them is in ``latency.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PROFILES_FILE = Path(__file__).parent / "data" / "profiles.yaml"


@dataclass(frozen=True)
class LatencyProfile:
    """Timing of one simulated model: the paper's eq. (3) plus jitter and a load model."""

    name: str
    source: str
    ttft: float  # mean time to first token once running, seconds
    tpot: float  # mean time per output token after the first, seconds
    jitter: float = 0.0  # relative: each duration is mean * (1 + u), u ~ Uniform(-jitter, jitter)
    max_num_seqs: int = 256  # sequences decoded at once; the rest wait in a FIFO queue
    slowdown_per_seq: float = 0.0  # TPOT * (1 + slowdown_per_seq * (running - 1))
    max_model_len: int = 8192  # prompt tokens + output tokens must fit
    assumptions: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.ttft < 0 or self.tpot < 0:
            problems.append("ttft and tpot must be >= 0")
        if not 0 <= self.jitter < 1:
            problems.append(f"jitter must be in [0, 1), got {self.jitter}")
        if self.max_num_seqs < 1:
            problems.append(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.slowdown_per_seq < 0:
            problems.append(f"slowdown_per_seq must be >= 0, got {self.slowdown_per_seq}")
        if self.max_model_len < 2:
            problems.append(f"max_model_len must be >= 2, got {self.max_model_len}")
        if problems:
            raise ValueError(f"latency profile '{self.name}': " + "; ".join(problems))

    @property
    def is_instant(self) -> bool:
        """True when no token ever waits (the ``zero`` profile): the engine skips all sleeping."""
        return self.ttft == 0 and self.tpot == 0

    def with_overrides(self, **changes: Any) -> LatencyProfile:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})


def parse_seconds(value: Any, *, field: str) -> float:
    """A duration in seconds from a number or a fraction string such as ``"1/75"``."""
    if isinstance(value, bool):
        raise ValueError(f"{field} must be a number of seconds or a fraction like '1/75', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            pass
    raise ValueError(f"{field} must be a number of seconds or a fraction like '1/75', got {value!r}")


_FIELDS = {field.name for field in dataclasses.fields(LatencyProfile)} - {"name"}


def _profile(name: str, raw: Any) -> LatencyProfile:
    if not isinstance(raw, dict):
        raise ValueError(f"latency profile '{name}' must be a mapping of fields")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ValueError(f"latency profile '{name}' has unknown fields {unknown}; known: {sorted(_FIELDS)}")
    missing = sorted({"source", "ttft", "tpot"} - set(raw))
    if missing:
        raise ValueError(f"latency profile '{name}' lacks required fields {missing}")
    fields = dict(raw)
    fields["ttft"] = parse_seconds(raw["ttft"], field=f"{name}.ttft")
    fields["tpot"] = parse_seconds(raw["tpot"], field=f"{name}.tpot")
    fields["source"] = str(raw["source"]).strip()
    fields["assumptions"] = str(raw.get("assumptions", "")).strip()
    return LatencyProfile(name=name, **fields)


def load_profiles(path: Path = DEFAULT_PROFILES_FILE) -> dict[str, LatencyProfile]:
    """Every profile of a YAML file (``profiles: {name: {fields}}``), by name."""
    with open(path, encoding="utf-8") as file:
        document = yaml.safe_load(file)
    if not isinstance(document, dict) or not isinstance(document.get("profiles"), dict):
        raise ValueError(f"{path}: expected a top-level 'profiles:' mapping")
    return {str(name): _profile(str(name), raw) for name, raw in document["profiles"].items()}
