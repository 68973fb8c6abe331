"""The quality table of constraint (4e): the shipped file loads and covers every model and service type,
client requirements are parsed strictly, and the paper's edge/cloud pair behaves as the file says."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgecloud.core.errors import BadRequestError
from edgecloud.core.headers import QUALITY_REQUIREMENT_HEADER
from edgecloud.core.settings import LOCAL_EDGE_MODEL
from edgecloud.core.vocabulary import QUALITY_PREFERRED, ServiceType
from edgecloud.gateway.quality import (
    DEFAULT_QUALITY_FILE,
    QualityTable,
    QualityTableError,
)
from edgecloud.llmsim.profiles import load_profiles

PAPER_EDGE = "meta-llama/Meta-Llama-3-8B-Instruct"  # Sec. IV-A: Llama3-8B at the edge
PAPER_CLOUD = "gpt-4o"  # Sec. IV-A: GPT-4o in the cloud
REGULAR = [service_type for service_type in ServiceType if service_type not in QUALITY_PREFERRED]
NOT_A_MODEL_PROFILES = {"zero"}  # the simulator's no-latency profile for overhead benchmarks


@pytest.fixture(scope="module")
def table() -> QualityTable:
    return QualityTable.load()


@pytest.fixture
def document() -> dict[str, Any]:
    """The shipped file as parsed YAML, to mutate into invalid variants."""
    with open(DEFAULT_QUALITY_FILE, encoding="utf-8") as file:
        return copy.deepcopy(yaml.safe_load(file))


def test_every_service_type_has_a_default_requirement(table: QualityTable) -> None:
    for service_type in ServiceType:
        assert 0 <= table.default_requirement(service_type) <= 100


def test_every_model_has_an_index_for_every_service_type(table: QualityTable) -> None:
    assert len(table.models) >= 9
    for name in table.models:
        for service_type in ServiceType:
            index = table.index(name, service_type)
            assert index is not None and 0 <= index <= 100, (name, service_type)


def test_every_score_names_its_source(table: QualityTable) -> None:
    for model in table.models.values():
        for benchmark, score in model.scores.items():
            assert score.source, (model.name, benchmark)
            assert score.verified or score.value == 0 or "secondary" in score.source, (model.name, benchmark)


def test_the_unverified_numbers_are_the_documented_ones(table: QualityTable) -> None:
    assert set(table.unverified()) == {
        ("smollm2-135m-instruct", "gpqa"),
        ("smollm2-135m-instruct", "math"),
        ("smollm2-135m-instruct", "humaneval"),
        ("gemma-7b", "gpqa"),
        ("gemini-1.5-pro", "gpqa"),
    }


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("llama-3-8b-edge", PAPER_EDGE),
        ("gpt-4o-cloud", PAPER_CLOUD),
        ("gpt-4o-2024-05-13", PAPER_CLOUD),
        ("llama-3.1-8b-h100", "meta-llama/Llama-3.1-8B-Instruct"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m-instruct"),
        ("meta-llama/Llama-2-70b-chat-hf", "llama-2-70b"),
    ],
)
def test_aliases_resolve_to_their_model(table: QualityTable, alias: str, canonical: str) -> None:
    model = table.model(alias)
    assert model is not None and model.name == canonical
    for service_type in ServiceType:
        assert table.index(alias, service_type) == table.index(canonical, service_type)


def test_llama_3_and_3_1_are_different_models(table: QualityTable) -> None:
    assert table.index("llama-3-8b-edge", ServiceType.MATH) != table.index("llama-3.1-8b-h100", ServiceType.MATH)


def test_every_simulator_profile_and_the_testbed_edge_have_an_entry(table: QualityTable) -> None:
    names = set(load_profiles()) - NOT_A_MODEL_PROFILES
    assert {"llama-3-8b-edge", "gpt-4o-cloud", "gemma-7b", "gemini-1.5-pro", "llama-2-7b"} <= names
    for name in [*names, LOCAL_EDGE_MODEL]:
        assert table.model(name) is not None, name


def test_model_names_match_exactly(table: QualityTable) -> None:
    assert table.index("GPT-4o", ServiceType.CHAT) is None
    assert table.index("zero", ServiceType.CHAT) is None


@pytest.mark.parametrize("absent", [None, "", "   "])
def test_no_header_means_the_default(table: QualityTable, absent: str | None) -> None:
    for service_type in ServiceType:
        assert table.requirement(service_type, absent) == table.default_requirement(service_type)


@pytest.mark.parametrize(
    ("header", "value"), [("80", 80.0), (" 42.5 ", 42.5), ("0", 0.0), ("100", 100.0), ("1e1", 10.0)]
)
def test_header_values_in_range_are_taken(table: QualityTable, header: str, value: float) -> None:
    assert table.requirement(ServiceType.CODING, header) == value


@pytest.mark.parametrize("header", ["abc", "nan", "NaN", "inf", "-inf", "-1", "100.5", "1e3", "50%", "0x10"])
def test_bad_header_values_are_a_bad_request(table: QualityTable, header: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        table.requirement(ServiceType.MATH, header)
    assert caught.value.param == QUALITY_REQUIREMENT_HEADER
    assert QUALITY_REQUIREMENT_HEADER in caught.value.message and repr(header) in caught.value.message
    assert "0 to 100" in caught.value.message and "math" in caught.value.message


def test_meets_is_index_at_least_requirement(table: QualityTable) -> None:
    index = table.index(PAPER_EDGE, ServiceType.CODING)
    assert index == 62.2
    assert table.meets(PAPER_EDGE, ServiceType.CODING, index)
    assert table.meets(PAPER_EDGE, ServiceType.CODING, index - 0.1)
    assert not table.meets(PAPER_EDGE, ServiceType.CODING, index + 0.1)


def test_an_unknown_model_meets_no_positive_requirement(table: QualityTable) -> None:
    assert table.index("no-such-model", ServiceType.CHAT) is None
    assert table.meets("no-such-model", ServiceType.CHAT, 0)
    assert not table.meets("no-such-model", ServiceType.CHAT, 0.1)
    assert not table.meets("no-such-model", ServiceType.CHAT, table.default_requirement(ServiceType.CHAT))


def test_the_paper_pair_under_default_requirements(table: QualityTable) -> None:
    """Sec. IV-A: regular tasks can stay at the edge (Llama3-8B); quality-preferred ones need the cloud (GPT-4o)."""
    for service_type in REGULAR:
        assert table.meets(PAPER_EDGE, service_type, table.default_requirement(service_type)), service_type
    for service_type in QUALITY_PREFERRED:
        assert not table.meets(PAPER_EDGE, service_type, table.default_requirement(service_type)), service_type
    for service_type in ServiceType:
        assert table.meets(PAPER_CLOUD, service_type, table.default_requirement(service_type)), service_type


def test_the_paper_pair_margins(table: QualityTable) -> None:
    """The defaults are not on a knife's edge: the edge clears regular ones by 10+ points, the cloud all by 5+."""
    for service_type in REGULAR:
        edge = table.index(PAPER_EDGE, service_type)
        assert edge is not None and edge - table.default_requirement(service_type) >= 10
    for service_type in ServiceType:
        cloud = table.index(PAPER_CLOUD, service_type)
        assert cloud is not None and cloud - table.default_requirement(service_type) >= 5


def test_a_client_requirement_below_the_edge_index_lets_the_edge_serve(table: QualityTable) -> None:
    """Why the edge fails quality-preferred tasks "most of the time", not always: a lenient client may accept it."""
    requirement = table.requirement(ServiceType.SCIENCE_REASONING, "30")
    assert table.meets(PAPER_EDGE, ServiceType.SCIENCE_REASONING, requirement)
    strict = table.requirement(ServiceType.CHAT, "90")
    assert not table.meets(PAPER_CLOUD, ServiceType.CHAT, strict)


def test_the_other_paper_pairs(table: QualityTable) -> None:
    """Sec. IV-B's pairs: under the defaults the cloud model meets every type its edge model meets.

    Not index by index: GPQA puts Llama 2 70B chat (21.0) just under Llama 2 7B chat (21.7), both below
    chance, a real quirk of Meta's table that no default requirement near chance should turn on.
    """
    for edge, cloud in [("gemma-7b", "gemini-1.5-pro"), ("llama-2-7b", "llama-2-70b"), (PAPER_EDGE, PAPER_CLOUD)]:
        for service_type in ServiceType:
            requirement = table.default_requirement(service_type)
            if table.meets(edge, service_type, requirement):
                assert table.meets(cloud, service_type, requirement), (edge, cloud, service_type)


# --- validation of the file ---------------------------------------------------------------------------


def invalid(document: dict[str, Any], match: str) -> None:
    with pytest.raises(QualityTableError, match=match):
        QualityTable.from_document(document, origin="test.yaml")


def test_unknown_service_type(document: dict[str, Any]) -> None:
    document["service_types"]["poetry"] = {"benchmark": "mmlu", "default_requirement": 50}
    invalid(document, r"service_types\.poetry: unknown service type 'poetry'")


def test_missing_service_type(document: dict[str, Any]) -> None:
    del document["service_types"]["coding"]
    invalid(document, r"service_types lacks \['coding'\]")


def test_unknown_benchmark_of_a_service_type(document: dict[str, Any]) -> None:
    document["service_types"]["math"]["benchmark"] = "gsm8k"
    invalid(document, r"service_types\.math\.benchmark: unknown benchmark 'gsm8k'")


@pytest.mark.parametrize("value", [101, -0.5, float("nan"), "high", True, None])
def test_index_out_of_range_or_not_a_number(document: dict[str, Any], value: Any) -> None:
    document["models"]["gpt-4o"]["scores"]["gpqa"]["value"] = value
    invalid(document, r"models\.gpt-4o\.scores\.gpqa\.value: ")


def test_requirement_out_of_range(document: dict[str, Any]) -> None:
    document["service_types"]["chat"]["default_requirement"] = 150
    invalid(document, r"service_types\.chat\.default_requirement: 150 is out of range \[0, 100\]")


def test_duplicate_alias_across_models(document: dict[str, Any]) -> None:
    document["models"]["gemma-7b"]["aliases"].append("gpt-4o-cloud")
    invalid(document, r"models\.gemma-7b: duplicate name or alias 'gpt-4o-cloud', already used by 'gpt-4o'")


def test_alias_equal_to_another_models_name(document: dict[str, Any]) -> None:
    document["models"]["llama-2-70b"]["aliases"] = ["llama-2-7b"]
    invalid(document, r"duplicate name or alias 'llama-2-7b', already used by 'llama-2-7b'")


def test_missing_score(document: dict[str, Any]) -> None:
    del document["models"]["llama-2-7b"]["scores"]["humaneval"]
    invalid(document, r"models\.llama-2-7b\.scores: lacks \['humaneval'\]")


def test_score_without_source(document: dict[str, Any]) -> None:
    del document["models"]["gpt-4o"]["scores"]["mmlu"]["source"]
    invalid(document, r"models\.gpt-4o\.scores\.mmlu: lacks 'source'")


def test_unknown_field(document: dict[str, Any]) -> None:
    document["models"]["gpt-4o"]["scores"]["mmlu"]["vaule"] = 1
    invalid(document, r"unknown fields \['vaule'\]")


def test_verified_must_be_a_boolean(document: dict[str, Any]) -> None:
    document["models"]["gpt-4o"]["scores"]["mmlu"]["verified"] = "yes"
    invalid(document, r"\.verified: expected true or false")


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "quality.yaml"
    path.write_text("benchmarks: {}\nservice_types: []\nmodels: {}\n", encoding="utf-8")
    with pytest.raises(QualityTableError, match=rf"{path}: service_types: expected a mapping"):
        QualityTable.load(path)
