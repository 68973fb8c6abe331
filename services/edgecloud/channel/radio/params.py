"""Parameters of the 3GPP radio model, read from ``data/radio.yaml``.

``RadioParams`` is plain data; the YAML file documents every field and its source in its header
comment and holds one block of values shared by both scenarios plus one block per scenario (UMa,
UMi street canyon). ``load_radio_params`` merges the common block, the chosen scenario's block and
keyword overrides, then validates. The model that uses the parameters is ``model.RadioModel``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from edgecloud.channel.radio.pathloss import HZ_PER_GHZ, SCENARIOS, SPEED_OF_LIGHT_M_S, Scenario

DEFAULT_RADIO_FILE = Path(__file__).parent.parent / "data" / "radio.yaml"

SUBCARRIERS_PER_RB = 12  # TS 38.211 clause 4.4.4.1, N_sc^RB
BASE_SUBCARRIER_SPACING_HZ = 15e3  # TS 38.211 Table 4.2-1: delta f = 2^mu x 15 kHz
SUBFRAME_S = 1e-3  # TS 38.211 clause 4.3.1; a subframe holds 2^mu slots (Table 4.3.2-1)
NUMEROLOGIES = range(5)  # mu = 0..4 (15-240 kHz) of TS 38.211 Table 4.2-1
MAX_RBS = 275  # largest N_RB of TS 38.101-1/-2 Table 5.3.2-1
CARRIER_RANGE_GHZ = (0.5, 100.0)  # frequency range of TR 38.901 (its title)
UT_HEIGHT_RANGE_M = (1.5, 22.5)  # applicability of Table 7.4.1-1 for UMa and UMi
MS_PER_KMH = 1 / 3.6
DB_PER_DECADE = 10.0
MAX_SCHEDULING_CELLS = 7  # every site of the 7-site layout (layout.py)
InterferenceActivity = Literal["bernoulli", "scheduled"]


@dataclass(frozen=True)
class RadioParams:
    """Everything the radio model needs; see ``data/radio.yaml`` for meanings and sources.

    No field has a default here: the YAML file is the one place defaults live, with their sources.
    """

    scenario: Scenario
    carrier_frequency_hz: float
    subcarrier_spacing_hz: float
    num_rbs: int
    bs_tx_power_dbm: float
    thermal_noise_dbm_per_hz: float
    ue_noise_figure_db: float
    isd_m: float
    bs_height_m: float
    ue_height_m: float
    min_distance_m: float
    activity_factor: float
    snr_gap_db: float
    max_spectral_efficiency_bps_hz: float | None
    fast_fading: bool
    fading_block_slots: int
    fading_trace_slots: int
    ue_speed_kmh: float
    mobility: bool
    mobility_update_s: float
    los_decorrelation_m: float
    shadowing_decorrelation_los_m: float
    shadowing_decorrelation_nlos_m: float
    scheduling_cells: int
    interference_activity: InterferenceActivity

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ValueError(f"radio parameters ({self.scenario}): " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if self.scenario not in SCENARIOS:
            problems.append(f"scenario must be one of {list(SCENARIOS)}, got {self.scenario!r}")
        low, high = CARRIER_RANGE_GHZ
        if not low * HZ_PER_GHZ <= self.carrier_frequency_hz <= high * HZ_PER_GHZ:
            problems.append(f"carrier_frequency_hz must be in [{low}, {high}] GHz, got {self.carrier_frequency_hz}")
        if self.numerology is None:
            allowed = [BASE_SUBCARRIER_SPACING_HZ * 2**mu for mu in NUMEROLOGIES]
            problems.append(f"subcarrier_spacing_hz must be one of {allowed}, got {self.subcarrier_spacing_hz}")
        if not 1 <= self.num_rbs <= MAX_RBS:
            problems.append(f"num_rbs must be in [1, {MAX_RBS}], got {self.num_rbs}")
        if self.isd_m <= 0:
            problems.append(f"isd_m must be > 0, got {self.isd_m}")
        if not 0 <= self.min_distance_m < self.isd_m / 2:
            problems.append(
                f"min_distance_m must be in [0, isd_m / 2) so users fit in the cell, got {self.min_distance_m}"
            )
        low, high = UT_HEIGHT_RANGE_M
        if not low <= self.ue_height_m <= high:
            problems.append(f"ue_height_m must be in [{low}, {high}] (TR 38.901 Table 7.4.1-1), got {self.ue_height_m}")
        if self.bs_height_m <= self.ue_height_m:
            problems.append(f"bs_height_m must exceed ue_height_m, got {self.bs_height_m} <= {self.ue_height_m}")
        if self.ue_noise_figure_db < 0:
            problems.append(f"ue_noise_figure_db must be >= 0, got {self.ue_noise_figure_db}")
        if not 0 <= self.activity_factor <= 1:
            problems.append(f"activity_factor must be in [0, 1], got {self.activity_factor}")
        if self.snr_gap_db < 0:
            problems.append(f"snr_gap_db must be >= 0, got {self.snr_gap_db}")
        if self.max_spectral_efficiency_bps_hz is not None and self.max_spectral_efficiency_bps_hz <= 0:
            problems.append(
                f"max_spectral_efficiency_bps_hz must be > 0 or null, got {self.max_spectral_efficiency_bps_hz}"
            )
        if self.fading_block_slots < 1:
            problems.append(f"fading_block_slots must be >= 1, got {self.fading_block_slots}")
        if self.fading_trace_slots < 1:
            problems.append(f"fading_trace_slots must be >= 1, got {self.fading_trace_slots}")
        if not 1 <= self.scheduling_cells <= MAX_SCHEDULING_CELLS:
            problems.append(f"scheduling_cells must be in [1, {MAX_SCHEDULING_CELLS}], got {self.scheduling_cells}")
        if self.interference_activity not in get_args(InterferenceActivity):
            problems.append(
                f"interference_activity must be one of {list(get_args(InterferenceActivity))}, "
                f"got {self.interference_activity!r}"
            )
        if self.ue_speed_kmh < 0:
            problems.append(f"ue_speed_kmh must be >= 0, got {self.ue_speed_kmh}")
        elif self.numerology is not None and self.doppler_hz >= 1 / (2 * self.slot_duration_s):
            problems.append(
                f"ue_speed_kmh {self.ue_speed_kmh} gives a Doppler shift of {self.doppler_hz:.0f} Hz, at or above "
                f"the slot rate's Nyquist frequency {1 / (2 * self.slot_duration_s):.0f} Hz: the fading would alias"
            )
        if self.mobility_update_s <= 0:
            problems.append(f"mobility_update_s must be > 0, got {self.mobility_update_s}")
        for name in ("los_decorrelation_m", "shadowing_decorrelation_los_m", "shadowing_decorrelation_nlos_m"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        return problems

    @property
    def numerology(self) -> int | None:
        """mu of TS 38.211 Table 4.2-1 (subcarrier spacing 2^mu x 15 kHz), or None if the spacing is not one."""
        for mu in NUMEROLOGIES:
            if math.isclose(self.subcarrier_spacing_hz, BASE_SUBCARRIER_SPACING_HZ * 2**mu):
                return mu
        return None

    @property
    def rb_bandwidth_hz(self) -> float:
        """b_q of eq. (2): 12 subcarriers per RB."""
        return SUBCARRIERS_PER_RB * self.subcarrier_spacing_hz

    @property
    def slot_duration_s(self) -> float:
        """1 ms / 2^mu (TS 38.211 Table 4.3.2-1: 2^mu slots per 1 ms subframe)."""
        return SUBFRAME_S * BASE_SUBCARRIER_SPACING_HZ / self.subcarrier_spacing_hz

    @property
    def rb_power_dbm(self) -> float:
        """p_{j,q} of eq. (2): the BS power split evenly over the RBs."""
        return self.bs_tx_power_dbm - DB_PER_DECADE * math.log10(self.num_rbs)

    @property
    def noise_per_rb_dbm(self) -> float:
        """b_q N0 of eq. (2): thermal noise over one RB plus the UE noise figure."""
        return (
            self.thermal_noise_dbm_per_hz + DB_PER_DECADE * math.log10(self.rb_bandwidth_hz) + self.ue_noise_figure_db
        )

    @property
    def ue_speed_m_s(self) -> float:
        return self.ue_speed_kmh * MS_PER_KMH

    @property
    def doppler_hz(self) -> float:
        """Maximum Doppler shift f_d = v f_c / c of the fast fading."""
        return self.ue_speed_m_s * self.carrier_frequency_hz / SPEED_OF_LIGHT_M_S

    def shadowing_decorrelation_m(self, los: bool) -> float:
        return self.shadowing_decorrelation_los_m if los else self.shadowing_decorrelation_nlos_m


_FIELDS = {field.name for field in dataclasses.fields(RadioParams)}
_BOOL_FIELDS = {"fast_fading", "mobility"}
_INT_FIELDS = {"num_rbs", "fading_block_slots", "fading_trace_slots", "scheduling_cells"}
_CHOICE_FIELDS = {"interference_activity": get_args(InterferenceActivity)}
_OPTIONAL_FIELDS = {"max_spectral_efficiency_bps_hz"}


def _coerce(name: str, value: Any) -> Any:
    """A YAML or keyword value as the field's type, with a message naming the field when it is not one."""
    if name == "scenario":
        if value not in get_args(Scenario):
            raise ValueError(f"radio parameter scenario must be one of {list(SCENARIOS)}, got {value!r}")
        return value
    if name in _CHOICE_FIELDS:
        if value not in _CHOICE_FIELDS[name]:
            raise ValueError(f"radio parameter {name} must be one of {list(_CHOICE_FIELDS[name])}, got {value!r}")
        return value
    if name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise ValueError(f"radio parameter {name} must be true or false, got {value!r}")
        return value
    if value is None and name in _OPTIONAL_FIELDS:
        return None
    if name in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"radio parameter {name} must be an integer, got {value!r}")
        return value
    if isinstance(value, bool):
        raise ValueError(f"radio parameter {name} must be a number, got {value!r}")
    try:
        number = float(value)  # also reads "3.5e9", which YAML 1.1 leaves a string
    except (TypeError, ValueError):
        raise ValueError(f"radio parameter {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"radio parameter {name} must be finite, got {value!r}")
    return number


def _mapping(document: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    block = document.get(key)
    if not isinstance(block, dict):
        raise ValueError(f"{path}: expected a '{key}:' mapping")
    return block


def load_radio_params(path: Path = DEFAULT_RADIO_FILE, **overrides: Any) -> RadioParams:
    """The parameters of ``path`` for ``overrides.get('scenario')`` (else the file's default), with overrides.

    Overrides with the value ``None`` are ignored, except ``max_spectral_efficiency_bps_hz`` (``None`` = uncapped),
    so settings objects can pass their unset fields straight through.
    """
    with open(path, encoding="utf-8") as file:
        document = yaml.safe_load(file)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping with 'default_scenario', 'common' and 'scenarios'")
    common = _mapping(document, "common", path)
    scenarios = _mapping(document, "scenarios", path)
    overrides = {k: v for k, v in overrides.items() if v is not None or k in _OPTIONAL_FIELDS}
    scenario = overrides.get("scenario", document.get("default_scenario"))
    if scenario not in scenarios:
        raise ValueError(f"{path}: unknown scenario {scenario!r}; the file defines {sorted(scenarios)}")
    raw = {**common, **scenarios[scenario], **overrides, "scenario": scenario}
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown radio parameters {unknown}; known: {sorted(_FIELDS)}")
    missing = sorted(set(_FIELDS) - set(raw))
    if missing:
        raise ValueError(f"{path}: radio parameters {missing} are missing for scenario {scenario!r}")
    return RadioParams(**{name: _coerce(name, value) for name, value in raw.items()})
