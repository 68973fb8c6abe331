"""The experience pool in Redis: shared by every gateway replica, atomic, persistent.

Keys of one pool, under ``PoolNamespace.prefix``:

- ``{prefix}:examples``: a hash, field = keyword key (``TaskState.key``), value = the example's JSON;
- ``{prefix}:version``: a counter, incremented exactly when the set of examples changes;
- ``{prefix}:log``: a stream of every experience offered, evaluated (fields ``experience``, ``outcome``,
  ``version``), capped near ``log_length`` entries;
- ``{prefix}:recorded:{experience_id}``: ``outcome:version`` of an experience recorded with an id, for
  ``RECORDED_ID_TTL_S``: offered again (its reply was lost), it is skipped and that result returned;
- ``{prefix}:scorer``: the fingerprint of the scorer that answers for the pool (``announce``), which the
  gateway reads with the version to know whether a decision it remembers still holds.

``offer`` applies the prioritized experience replay of section III-B (``replay.replay``) in one Lua
script, so concurrent replicas never lose a better example between a read and a write. The version and
scorer keys' names are the contract with the gateway (``core.wire.pool_version_key``, ``pool_scorer_key``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis

from edgecloud.core.vocabulary import Evaluation, ReplayOutcome
from edgecloud.core.wire import pool_scorer_key, pool_version_key
from edgecloud.decision.experience import Experience
from edgecloud.decision.pool import LOG_LENGTH, RECORDED_ID_TTL_S, OfferResult, PoolNamespace, PoolSnapshot

# KEYS: examples hash, version counter, log stream, the experience's recorded-id marker.
# ARGV: keyword key, reward (Python repr, exact as a double), "1" if the quality constraint (4e) is met,
#       the experience's JSON evaluated Good, the same evaluated Bad, the log's length cap, "1" if the
#       experience has an id (the marker is used), the marker's TTL.
# The branches are those of replay.replay, in the same order. Returns {outcome, version, 1 if a duplicate}.
OFFER_SCRIPT = """
if ARGV[7] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    local colon = string.find(seen, ':', 1, true)
    return {string.sub(seen, 1, colon - 1), tonumber(string.sub(seen, colon + 1)), 1}
  end
end
local outcome
if ARGV[3] ~= '1' then
  outcome = 'rejected_bad'
else
  local stored = redis.call('HGET', KEYS[1], ARGV[1])
  if not stored then
    outcome = 'added'
  elseif tonumber(ARGV[2]) > cjson.decode(stored)['reward'] then
    outcome = 'replaced'
  else
    outcome = 'kept_existing'
  end
end
local evaluated = ARGV[5]
local version
if outcome == 'added' or outcome == 'replaced' then
  evaluated = ARGV[4]
  redis.call('HSET', KEYS[1], ARGV[1], evaluated)
  version = redis.call('INCR', KEYS[2])
else
  version = tonumber(redis.call('GET', KEYS[2]) or '0')
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*',
           'experience', evaluated, 'outcome', outcome, 'version', version)
if ARGV[7] == '1' then
  redis.call('SET', KEYS[4], outcome .. ':' .. version, 'EX', ARGV[8])
end
return {outcome, version, 0}
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: dict[Any, Any], name: str) -> Any:
    """A stream entry's field, whether the client decodes responses or not."""
    return fields[name] if name in fields else fields[name.encode()]


class RedisExperiencePool:
    """``ExperiencePool`` on ``redis.asyncio``, with the same semantics as ``InMemoryExperiencePool``."""

    def __init__(self, client: redis.Redis, *, log_length: int = LOG_LENGTH) -> None:
        if log_length < 1:
            raise ValueError(f"log_length must be at least 1, got {log_length}")
        self.client = client
        self.log_length = log_length
        self._offer_script = client.register_script(OFFER_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, log_length: int = LOG_LENGTH, **client_options: Any) -> RedisExperiencePool:
        """A pool on its own client; ``client_options`` go to ``redis.asyncio.from_url`` (timeouts, retry)."""
        return cls(redis.from_url(url, **client_options), log_length=log_length)

    async def aclose(self) -> None:
        await self.client.aclose()

    @staticmethod
    def _keys(namespace: PoolNamespace) -> tuple[str, str, str]:
        prefix = namespace.prefix
        return f"{prefix}:examples", pool_version_key(namespace.cell, namespace.policy), f"{prefix}:log"

    async def offer(self, namespace: PoolNamespace, experience: Experience) -> OfferResult:
        """Rules 1 and 2 of section III-B, and step 3's Bad for a violated constraint, in one script; an
        experience whose id was recorded before is skipped (its first result, ``duplicate``)."""
        return (await self.offer_many([(namespace, experience)]))[0]

    async def offer_many(self, offers: Sequence[tuple[PoolNamespace, Experience]]) -> list[OfferResult]:
        """``offer`` for each, in order, in one round trip (a pipeline of the script's calls, not a transaction:
        each call is atomic on its own, as one ``offer`` is)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for namespace, experience in offers:
                marker = f"{namespace.prefix}:recorded:{experience.experience_id}"
                await self._offer_script(
                    keys=(*self._keys(namespace), marker),
                    args=(
                        experience.state.key,
                        repr(experience.reward),
                        "1" if experience.quality_met else "0",
                        experience.evaluated(Evaluation.GOOD).to_json(),
                        experience.evaluated(Evaluation.BAD).to_json(),
                        self.log_length,
                        "1" if experience.experience_id else "0",
                        RECORDED_ID_TTL_S,
                    ),
                    client=pipe,
                )
            replies = await pipe.execute()
        return [
            OfferResult(ReplayOutcome(_text(outcome)), int(version), duplicate=bool(int(duplicate)))
            for outcome, version, duplicate in replies
        ]

    async def announce(self, namespace: PoolNamespace, scorer: str) -> bool:
        await self.client.set(pool_scorer_key(namespace.cell, namespace.policy), scorer)
        return True

    async def snapshot(self, namespace: PoolNamespace) -> PoolSnapshot:
        """The examples, ordered by keyword key, and the version they belong to (one MULTI/EXEC)."""
        examples, version = await self._on_examples_and_version(namespace, "HGETALL", "GET")
        ordered = sorted((_text(key), value) for key, value in examples.items())
        return PoolSnapshot(int(version or 0), tuple(Experience.from_json(value) for _, value in ordered))

    async def version(self, namespace: PoolNamespace) -> int:
        return int(await self.client.get(self._keys(namespace)[1]) or 0)

    async def latest(self, namespace: PoolNamespace, count: int) -> list[Experience]:
        """The ``count`` newest log entries, newest first (the latest-experience baseline of section III-B)."""
        if count < 1:
            return []
        entries = await self.client.xrevrange(self._keys(namespace)[2], count=count) or []
        return [Experience.from_json(_field(fields or {}, "experience")) for _, fields in entries]

    async def clear(self, namespace: PoolNamespace) -> int:
        """Empty the examples and bump the version in one MULTI/EXEC; the log stays."""
        _, version = await self._on_examples_and_version(namespace, "DEL", "INCR")
        return int(version)

    async def _on_examples_and_version(self, namespace: PoolNamespace, on_examples: str, on_version: str) -> list[Any]:
        """One command on the examples hash and one on the version counter, in one MULTI/EXEC."""
        examples_key, version_key, _ = self._keys(namespace)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.execute_command(on_examples, examples_key)
            pipe.execute_command(on_version, version_key)
            return list(await pipe.execute())
