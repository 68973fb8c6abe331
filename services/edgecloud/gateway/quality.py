"""Quality indices of the serving LLMs and the user's requirement: the paper's constraint (4e).

(4e) asks that the quality index of the LLM serving a request, edge or cloud, be at least the user's
requirement. The indices are public benchmark scores in percent, one benchmark per service type,
read from ``data/quality.yaml``; that file's header documents every field, the choice of benchmarks
and of the default requirements, and each score's source. Loading validates the whole file, so a
typo fails at start-up with a message naming the place, not later as a silently unmet constraint.

Model names match exactly (backend names are case-sensitive in vLLM and the OpenAI API). A model
the table does not know has no index: it meets only a requirement of 0, since nothing says it is
any good, and a quality constraint that passes by default would hide a missing table entry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgecloud.core.errors import BadRequestError
from edgecloud.core.headers import QUALITY_REQUIREMENT_HEADER
from edgecloud.core.vocabulary import ServiceType

DEFAULT_QUALITY_FILE = Path(__file__).parent / "data" / "quality.yaml"
# Indices and requirements are benchmark scores in percent.
INDEX_MIN = 0.0
INDEX_MAX = 100.0


class QualityTableError(ValueError):
    """The quality file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Score:
    """One benchmark score of one model, with where it was read."""

    value: float
    source: str
    setting: str = ""
    verified: bool = True  # False: no public source was read; a value of 0 is then a floor
    note: str = ""


@dataclass(frozen=True)
class ModelQuality:
    name: str
    aliases: tuple[str, ...]
    description: str
    scores: Mapping[str, Score]  # by benchmark key


@dataclass(frozen=True)
class ServiceTypeQuality:
    benchmark: str
    default_requirement: float


class QualityTable:
    """Quality index per model and service type, and the default requirement per service type."""

    def __init__(self, service_types: Mapping[ServiceType, ServiceTypeQuality], models: Mapping[str, ModelQuality]):
        self.service_types = dict(service_types)
        self.models = dict(models)
        self._by_name: dict[str, ModelQuality] = {}
        for model in self.models.values():
            for name in (model.name, *model.aliases):
                self._by_name[name] = model

    @classmethod
    def load(cls, path: Path = DEFAULT_QUALITY_FILE) -> QualityTable:
        """Read and validate a quality file (format in the header of ``data/quality.yaml``)."""
        with open(path, encoding="utf-8") as file:
            document = yaml.safe_load(file)
        return cls.from_document(document, origin=str(path))

    @classmethod
    def from_document(cls, document: Any, *, origin: str = "<document>") -> QualityTable:
        """Validate an already parsed document; ``origin`` prefixes every error message."""
        return _parse(document, origin)

    def model(self, name: str) -> ModelQuality | None:
        """The entry of a model by its canonical name or an alias."""
        return self._by_name.get(name)

    def index(self, model: str, service_type: ServiceType) -> float | None:
        """The quality index tau of ``model`` for ``service_type``; None for a model not in the table."""
        entry = self._by_name.get(model)
        if entry is None:
            return None
        return entry.scores[self.service_types[service_type].benchmark].value

    def default_requirement(self, service_type: ServiceType) -> float:
        return self.service_types[service_type].default_requirement

    def requirement(self, service_type: ServiceType, header_value: str | None) -> float:
        """The user's requirement: the client's header value if it sent one, else the type's default."""
        if header_value is None or not header_value.strip():
            return self.default_requirement(service_type)
        try:
            value = float(header_value.strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not INDEX_MIN <= value <= INDEX_MAX:
            benchmark = self.service_types[service_type].benchmark
            raise BadRequestError(
                f"Invalid {QUALITY_REQUIREMENT_HEADER} header {header_value!r}: expected a number from {INDEX_MIN:g} "
                f"to {INDEX_MAX:g}, a score in percent on the {benchmark} benchmark that rates {service_type.value}.",
                param=QUALITY_REQUIREMENT_HEADER,
            )
        return value

    def meets(self, model: str, service_type: ServiceType, requirement: float) -> bool:
        """Constraint (4e): the model's index is at least the requirement. An unknown model meets only 0."""
        index = self.index(model, service_type)
        return requirement <= 0 if index is None else index >= requirement

    def unverified(self) -> list[tuple[str, str]]:
        """(model, benchmark) pairs whose score no public source confirmed, for reports and reviews."""
        return [
            (model.name, benchmark)
            for model in self.models.values()
            for benchmark, score in model.scores.items()
            if not score.verified
        ]


# --- parsing and validation -----------------------------------------------------------------------

_BENCHMARK_FIELDS = {"name", "reference", "measures"}
_SERVICE_TYPE_FIELDS = {"benchmark", "default_requirement", "why"}
_MODEL_FIELDS = {"aliases", "description", "scores"}
_SCORE_FIELDS = {"value", "setting", "source", "verified", "note"}


def _mapping(value: Any, where: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise QualityTableError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _known_fields(raw: dict[Any, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(key) for key in set(raw) - allowed)
    if unknown:
        raise QualityTableError(f"{where}: unknown fields {unknown}; known: {sorted(allowed)}")


def _percent(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise QualityTableError(f"{where}: expected a number from {INDEX_MIN:g} to {INDEX_MAX:g}, got {value!r}")
    if not INDEX_MIN <= value <= INDEX_MAX:
        raise QualityTableError(f"{where}: {value} is out of range [{INDEX_MIN:g}, {INDEX_MAX:g}]")
    return float(value)


def _text(raw: dict[Any, Any], key: str, where: str, *, required: bool) -> str:
    value = raw.get(key)
    if value is None:
        if required:
            raise QualityTableError(f"{where}: lacks '{key}'")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise QualityTableError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return " ".join(value.split())


def _service_types(raw: Any, benchmarks: set[str], origin: str) -> dict[ServiceType, ServiceTypeQuality]:
    entries = _mapping(raw, f"{origin}: service_types")
    known = [service_type.value for service_type in ServiceType]
    result: dict[ServiceType, ServiceTypeQuality] = {}
    for key, value in entries.items():
        where = f"{origin}: service_types.{key}"
        if key not in known:
            raise QualityTableError(f"{where}: unknown service type {key!r}; known: {known}")
        entry = _mapping(value, where)
        _known_fields(entry, _SERVICE_TYPE_FIELDS, where)
        benchmark = entry.get("benchmark")
        if benchmark not in benchmarks:
            raise QualityTableError(f"{where}.benchmark: unknown benchmark {benchmark!r}; known: {sorted(benchmarks)}")
        if "default_requirement" not in entry:
            raise QualityTableError(f"{where}: lacks 'default_requirement'")
        requirement = _percent(entry["default_requirement"], f"{where}.default_requirement")
        result[ServiceType(key)] = ServiceTypeQuality(str(benchmark), requirement)
    missing = [service_type.value for service_type in ServiceType if service_type not in result]
    if missing:
        raise QualityTableError(f"{origin}: service_types lacks {missing}; every service type needs an entry")
    return result


def _score(raw: Any, where: str) -> Score:
    entry = _mapping(raw, where)
    _known_fields(entry, _SCORE_FIELDS, where)
    if "value" not in entry:
        raise QualityTableError(f"{where}: lacks 'value'")
    verified = entry.get("verified", True)
    if not isinstance(verified, bool):
        raise QualityTableError(f"{where}.verified: expected true or false, got {verified!r}")
    return Score(
        value=_percent(entry["value"], f"{where}.value"),
        source=_text(entry, "source", where, required=True),
        setting=_text(entry, "setting", where, required=False),
        verified=verified,
        note=_text(entry, "note", where, required=False),
    )


def _models(raw: Any, needed: set[str], origin: str) -> dict[str, ModelQuality]:
    entries = _mapping(raw, f"{origin}: models")
    if not entries:
        raise QualityTableError(f"{origin}: models is empty")
    result: dict[str, ModelQuality] = {}
    owner: dict[str, str] = {}  # every name and alias -> the model it belongs to
    for key, value in entries.items():
        name = str(key)
        where = f"{origin}: models.{name}"
        entry = _mapping(value, where)
        _known_fields(entry, _MODEL_FIELDS, where)
        aliases = entry.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(alias, str) and alias for alias in aliases):
            raise QualityTableError(f"{where}.aliases: expected a list of names, got {aliases!r}")
        for alias in (name, *aliases):
            if alias in owner:
                raise QualityTableError(f"{where}: duplicate name or alias {alias!r}, already used by {owner[alias]!r}")
            owner[alias] = name
        scores = _mapping(entry.get("scores"), f"{where}.scores")
        unknown = sorted(str(benchmark) for benchmark in set(scores) - needed)
        if unknown:
            raise QualityTableError(f"{where}.scores: unknown benchmarks {unknown}; used: {sorted(needed)}")
        missing = sorted(needed - set(scores))
        if missing:
            raise QualityTableError(f"{where}.scores: lacks {missing}; every benchmark of a service type needs one")
        result[name] = ModelQuality(
            name=name,
            aliases=tuple(aliases),
            description=_text(entry, "description", where, required=False),
            scores={
                str(benchmark): _score(raw_score, f"{where}.scores.{benchmark}")
                for benchmark, raw_score in scores.items()
            },
        )
    return result


def _parse(document: Any, origin: str) -> QualityTable:
    root = _mapping(document, origin)
    _known_fields(root, {"benchmarks", "service_types", "models"}, origin)
    benchmarks = _mapping(root.get("benchmarks"), f"{origin}: benchmarks")
    for key, value in benchmarks.items():
        where = f"{origin}: benchmarks.{key}"
        _known_fields(_mapping(value, where), _BENCHMARK_FIELDS, where)
        _text(value, "name", where, required=True)
    service_types = _service_types(root.get("service_types"), {str(key) for key in benchmarks}, origin)
    needed = {rule.benchmark for rule in service_types.values()}
    return QualityTable(service_types, _models(root.get("models"), needed, origin))
