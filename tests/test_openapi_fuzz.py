"""Schemathesis against the running services: every operation of the gateway, the air interface and the
decision service, each with its own OpenAPI document, ``EXAMPLES`` generated requests per operation and
all of schemathesis's checks (no 5xx, statuses, content types and bodies as documented, invalid data
refused, valid data taken) but one where it cannot hold: on the generation endpoints a schema-valid
request may be refused by design, as OpenAI and vLLM refuse it (a model that is not served: 404; an
output limit beyond the serving model's context: 400 ``context_length_exceeded``), so "valid data is
accepted" is not checked there."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import positive_data_acceptance

from conftest import running_live_stack
from edgecloud.core.protocol import GENERATION_REQUESTS

EXAMPLES = 50  # per operation: bounded, so the three documents take about a minute together
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def fuzzed_stack(tmp_path_factory, live_redis):
    with running_live_stack(tmp_path_factory.mktemp("fuzzed-stack"), live_redis.url) as stack:
        yield stack


def fuzzer(operation: Any, mode: schemathesis.GenerationMode, excluded: list[Any]) -> Any:
    """A Hypothesis test that calls ``operation`` with generated requests and validates each answer."""

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(excluded_checks=excluded)

    return run


def fuzz(base_url: str) -> list[str]:
    """Run every operation of ``base_url``'s document, valid and invalid requests alike; the failures found.

    Through schemathesis's Python API and Hypothesis directly: its pytest plugin does not run under the
    pytest this project pins.
    """
    failures = []
    for loaded in schemathesis.openapi.from_url(f"{base_url}/openapi.json").get_all_operations():
        operation = loaded.ok()
        excluded = [positive_data_acceptance] if operation.path in GENERATION_REQUESTS else []
        for mode in schemathesis.GenerationMode:
            run = fuzzer(operation, mode, excluded)
            try:
                run()
            except Unsatisfiable:
                continue  # no invalid request exists for an operation without inputs
            except (Exception, BaseExceptionGroup) as failure:  # reported together, with the operation's name
                failures.append(f"{operation.label} ({mode.value}): {str(failure)[:1500]}")
    return failures


def test_gateway_keeps_its_openapi_document(fuzzed_stack):
    assert not (failures := fuzz(fuzzed_stack.gateway_url)), "\n\n".join(failures)


def test_air_interface_keeps_its_openapi_document(fuzzed_stack):
    assert not (failures := fuzz(fuzzed_stack.air_url)), "\n\n".join(failures)


def test_decision_service_keeps_its_openapi_document(fuzzed_stack):
    assert not (failures := fuzz(fuzzed_stack.decision_url)), "\n\n".join(failures)
