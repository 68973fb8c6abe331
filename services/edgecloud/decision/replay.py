"""Prioritized experience replay (section III-B): which experiences enter the pool.

The pool holds at most one example per keyword combination. For a new experience E_current:
- a bad decision (the constraints of eq. 4 violated, here the quality constraint 4e) is evaluated
  Bad and leaves the pool unchanged (step 3 of section III-A);
- rule 1: no example with the same keywords yet: E_current is added, evaluated Good;
- rule 2: an example E_e with the same keywords exists: if E_current's reward is higher, it replaces
  E_e and is Good; otherwise it is Bad and the pool is unchanged. On an equal reward the stored example
  stays (the paper only says what happens when one is higher; keeping it avoids a version bump).

``RedisExperiencePool`` applies the same rules atomically in a Lua script; ``tests/test_decision_pool*``
check that both agree.
"""

from __future__ import annotations

from edgecloud.core.vocabulary import ReplayOutcome
from edgecloud.decision.experience import Experience


def replay(stored: Experience | None, current: Experience) -> ReplayOutcome:
    """What happens to ``current`` given the pool's example for the same keywords (``stored``)."""
    if not current.quality_met:
        return ReplayOutcome.REJECTED_BAD
    if stored is None:
        return ReplayOutcome.ADDED
    if current.reward > stored.reward:
        return ReplayOutcome.REPLACED
    return ReplayOutcome.KEPT_EXISTING
