"""Parameters of a 3GPP calibration campaign, read from ``data/calibration.yaml``.

``CalibrationCampaign`` is plain data: the carrier, power and noise, the 19-site layout, the BS port's antenna, the
indoor users and the UMa LOS formula of one campaign. The YAML file gives every value its source; there are no
defaults here. ``coupling.py`` turns a campaign into coupling gains, ``calibration.py`` into CDFs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from edgecloud.channel.radio.o2i import FLOOR_HEIGHT_M, GROUND_FLOOR_UT_HEIGHT_M, O2I_MODELS, O2iModel
from edgecloud.channel.radio.pathloss import UMA_LOS_FORMULAS, UmaLosFormula
from edgecloud.channel.radio.sectors import SECTORS_PER_SITE

DEFAULT_CALIBRATION_FILE = Path(__file__).parent.parent / "data" / "calibration.yaml"
DB_PER_DECADE = 10.0
UT_HEIGHT_RANGE_M = (1.5, 22.5)  # applicability of TR 38.901 Table 7.4.1-1, UMa
FLOOR_RANGE_LENGTH = 2  # [fewest, most]
SignalStrength = Literal["direct_path", "multipath"]
SIGNAL_STRENGTHS: tuple[SignalStrength, ...] = ("direct_path", "multipath")
UE_POLARISATIONS = (1, 2)


@dataclass(frozen=True)
class CalibrationCampaign:
    """One calibration campaign; ``data/calibration.yaml`` documents each field and its source."""

    name: str
    carrier_frequency_hz: float
    bandwidth_hz: float
    bs_tx_power_dbm: float
    thermal_noise_dbm_per_hz: float
    ue_noise_figure_db: float
    isd_m: float
    bs_height_m: float
    min_distance_m: float
    sector_boresights_deg: tuple[float, ...]
    antenna_elements: int
    antenna_spacing_wavelengths: float
    electrical_tilt_deg: float
    element_max_gain_dbi: float
    ue_antenna_gain_dbi: float
    indoor_fraction: float
    o2i_model: O2iModel
    high_loss_fraction: float
    indoor_distance_max_m: float
    ue_height_outdoor_m: float
    building_floors: tuple[int, int]
    uma_los_formula: UmaLosFormula
    signal_strength: SignalStrength
    bs_polarisation_slant_deg: float
    ue_polarisations: int

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ValueError(f"calibration campaign {self.name}: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        if len(self.building_floors) != FLOOR_RANGE_LENGTH:
            return [f"building_floors must be [fewest, most], got {self.building_floors}"]
        problems = []
        for name in ("carrier_frequency_hz", "bandwidth_hz", "isd_m", "antenna_spacing_wavelengths"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.min_distance_m < self.isd_m / 2:
            problems.append(f"min_distance_m must be in [0, isd_m / 2), got {self.min_distance_m}")
        if len(self.sector_boresights_deg) != SECTORS_PER_SITE:
            problems.append(
                f"sector_boresights_deg must hold {SECTORS_PER_SITE} angles, got {self.sector_boresights_deg}"
            )
        if self.antenna_elements < 1:
            problems.append(f"antenna_elements must be >= 1, got {self.antenna_elements}")
        for name in ("indoor_fraction", "high_loss_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.indoor_distance_max_m < 0:
            problems.append(f"indoor_distance_max_m must be >= 0, got {self.indoor_distance_max_m}")
        fewest, most = self.building_floors
        if not 1 <= fewest <= most:
            problems.append(
                f"building_floors must be [fewest, most] with 1 <= fewest <= most, got {self.building_floors}"
            )
        low, high = UT_HEIGHT_RANGE_M
        if not low <= self.ue_height_outdoor_m <= self.highest_ut_m <= high:
            problems.append(f"UT heights must be in [{low}, {high}] m (TR 38.901 Table 7.4.1-1)")
        if self.bs_height_m <= self.highest_ut_m:
            problems.append(f"bs_height_m must exceed every UT height, got {self.bs_height_m}")
        if self.uma_los_formula not in UMA_LOS_FORMULAS:
            problems.append(f"uma_los_formula must be one of {list(UMA_LOS_FORMULAS)}, got {self.uma_los_formula!r}")
        if self.o2i_model not in O2I_MODELS:
            problems.append(f"o2i_model must be one of {list(O2I_MODELS)}, got {self.o2i_model!r}")
        if self.signal_strength not in SIGNAL_STRENGTHS:
            problems.append(f"signal_strength must be one of {list(SIGNAL_STRENGTHS)}, got {self.signal_strength!r}")
        if self.ue_polarisations not in UE_POLARISATIONS:
            problems.append(f"ue_polarisations must be one of {list(UE_POLARISATIONS)}, got {self.ue_polarisations}")
        return problems

    @property
    def highest_ut_m(self) -> float:
        """Height of a user on the top floor of the tallest building, 3 (N_fl - 1) + 1.5 m (Table 7.2-1)."""
        return max(self.ue_height_outdoor_m, FLOOR_HEIGHT_M * (self.building_floors[1] - 1) + GROUND_FLOOR_UT_HEIGHT_M)

    @property
    def noise_power_dbm(self) -> float:
        """N = -174 dBm/Hz + 10 log10(B) + NF."""
        return self.thermal_noise_dbm_per_hz + DB_PER_DECADE * math.log10(self.bandwidth_hz) + self.ue_noise_figure_db


_FIELDS = {field.name: field for field in dataclasses.fields(CalibrationCampaign)}
_INT_FIELDS = {"antenna_elements", "ue_polarisations"}
_TUPLE_FIELDS = {"sector_boresights_deg": float, "building_floors": int}
_TEXT_FIELDS = {"name", "uma_los_formula", "signal_strength", "o2i_model"}


def _coerce(campaign: str, name: str, value: Any) -> Any:
    """A YAML value as the field's type, with a message naming the campaign and field when it is not one."""
    where = f"calibration campaign {campaign}: {name}"
    if name in _TEXT_FIELDS:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    if name in _TUPLE_FIELDS:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return tuple(_number(where, item, _TUPLE_FIELDS[name]) for item in value)
    return _number(where, value, int if name in _INT_FIELDS else float)


def _number(where: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or (kind is int and not isinstance(value, int)):
        raise ValueError(f"{where} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    try:
        number = kind(value)  # float() also reads "6e9", which YAML 1.1 leaves a string
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where} must be finite, got {value!r}")
    return number


def campaign_names(path: Path = DEFAULT_CALIBRATION_FILE) -> list[str]:
    """The campaigns of a calibration file, in file order."""
    return list(_read_campaigns(path))


def load_campaign(name: str, path: Path = DEFAULT_CALIBRATION_FILE) -> CalibrationCampaign:
    """The campaign ``name`` of ``path``: every field required, none unknown, each checked for type and range."""
    campaigns = _read_campaigns(path)
    if name not in campaigns:
        raise ValueError(f"unknown calibration campaign {name!r}; known: {list(campaigns)}")
    values = {"name": name, **campaigns[name]}
    unknown = sorted(set(values) - set(_FIELDS))
    missing = sorted(set(_FIELDS) - set(values))
    if unknown or missing:
        raise ValueError(f"calibration campaign {name}: unknown fields {unknown}, missing fields {missing}")
    return CalibrationCampaign(**{key: _coerce(name, key, value) for key, value in values.items()})


def _read_campaigns(path: Path) -> dict[str, dict[str, Any]]:
    with open(path) as file:
        document = yaml.safe_load(file)
    if not isinstance(document, dict) or not isinstance(document.get("campaigns"), dict):
        raise ValueError(f"{path}: expected a mapping with a 'campaigns' mapping")
    return document["campaigns"]
