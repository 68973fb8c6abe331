"""Faults under load on the running sim testbed (``benchmarks/faults.py``, short phases): Redis, the decision
service, the cloud and the edge killed and restarted, the edge paused; nothing lost that had not started."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import faults

PHASE_S = 5.0


def test_faults_lose_no_request_that_had_not_started_and_no_pool_entry():
    result = faults.run(phase_s=PHASE_S)
    assert result["lost"] == 0, result["lost_requests"]
    assert result["pool_examples_before"] >= 1 and result["pool_examples_lost"] == 0
    for fault, measured in result["faults"].items():
        assert measured["requests"] >= 3, (fault, measured)  # the load went on through every fault
        assert measured["time_to_recover_s"] < 3 * PHASE_S, (fault, measured)
    paused = result["faults"]["edge_paused"]
    # A hung edge costs at most the first-token timeout (then the cloud answers), and only the requests
    # sent before it was marked down (and a probe) pay it.
    assert paused["ttft_added_worst_s"] <= faults.FIRST_TOKEN_TIMEOUT_S + 1.0, paused
    assert paused["paid_first_token_timeout"] <= paused["requests"] // 2, paused
