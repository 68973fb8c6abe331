"""Score the candidate answers y of the meta-prompt with an LLM over the OpenAI API (eqs. 5-6).

Eq. 5 asks for Pr(y | x, E, D) of each candidate y; eq. 6 takes the argmax. Three paths get it from
what an endpoint offers, best first:

- ``prompt_logprobs``: eq. 5 exactly, the sum of the log-probabilities of the candidate's tokens
  after the prompt. Two ways to ask, both one batched ``POST /completions`` that generates no text
  (vLLM runs one decode step per prompt and discards it):

  * ``CachedPromptLogprobScorer`` (vLLM extensions, the fast one): tokenize with ``/tokenize``, then
    send token-id prompts that end right before each candidate token and ask for the log-probability
    of exactly that token (``logprob_token_ids``). The prompt is read through vLLM's prefix cache: an
    uncached decision of the shipped method took 0.55 s (p50) on the CPU testbed (BENCHMARKS.md, "Decision
    latency").
  * ``PromptLogprobScorer`` (the OpenAI legacy-completions way): every prompt + candidate with
    ``echo``, ``logprobs`` and ``max_tokens: 0``. vLLM 0.32 reads no prefix cache for requests with
    prompt log-probabilities, so each decision prefills the whole prompt twice: ~90 s on that CPU.
- ``top_logprobs``: chat endpoints without prompt log-probabilities (GPT-4o): one chat completion of
  one token with its 20 most likely alternatives, mapped to candidates.
- ``constrained``: no log-probabilities at all: a short greedy answer, parsed strictly.

``make_scorer("auto", ...)`` tries them in that order and remembers the first one the endpoint
supports; when none works it remembers that too, for a while (``CannotScore``). Every failure is a
``ScoringError``, so the decision service can fall back. No prompt text
is logged (the prompt holds only closed-set keywords and numbers anyway, see ``prompt.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

import httpx

from edgecloud.core.vocabulary import Action
from edgecloud.decision.llm_endpoint import (
    DEFAULT_TIMEOUT_S,
    CannotScore,
    OpenAIEndpoint,
    PathUnsupported,
    ScoringError,
    choices,
    completion_tokens,
    field,
)

logger = logging.getLogger(__name__)

# OpenAI's maximum for chat ``top_logprobs`` (and vLLM's default ``--max-logprobs``).
TOP_LOGPROBS = 20
# An unseen candidate's floor sits this many nats below the smallest returned log-probability.
FLOOR_MARGIN = math.log(2.0)
# "local"/"offload" plus a period or a space fit in 3 tokens; more would only let the model explain.
CONSTRAINED_MAX_TOKENS = 3
# Ours: how long an endpoint that offered no way to score is answered "cannot" before it is tried again.
CANNOT_SCORE_RETRY_S = 60.0
# How vLLM names a token in log-probabilities under ``return_tokens_as_token_ids``.
TOKEN_ID_PREFIX = "token_id:"


class UnparseableAnswer(ScoringError):
    """The model answered something that is none of the candidates."""

    def __init__(self, answer: str, message: str | None = None) -> None:
        self.answer = answer
        super().__init__(message or f"answer is not exactly one candidate: {answer!r}")


class ScoringPath(StrEnum):
    PROMPT_LOGPROBS = "prompt_logprobs"
    TOP_LOGPROBS = "top_logprobs"
    CONSTRAINED = "constrained"


@dataclass(frozen=True)
class ScoreResult:
    scores: dict[Action, float]
    """Log-probability of each candidate (constrained: 0.0 for the answer, -inf for the others)."""
    path: ScoringPath
    action: Action
    """The argmax of eq. 6."""
    requests: int
    """LLM requests made (AutoScorer counts those of the paths the endpoint refused; ``/tokenize`` runs no model
    and is not counted)."""
    method: str
    """How the path was asked: ``token_ids`` or ``echo`` for prompt_logprobs, else the path's name."""
    completion_tokens: int | None = None
    """Tokens the endpoint says it generated (``usage``), if it says; vLLM counts 1 per prompt for scoring."""
    token_logprobs: dict[Action, tuple[float, ...]] | None = None
    """Per candidate, the log-probability of each of its tokens (prompt_logprobs paths); None where a path
    sees only the first token or none (top_logprobs, constrained): ``scores`` is then that one value."""

    def tokens_of(self, action: Action) -> tuple[float, ...]:
        """The candidate's token log-probabilities (one value where the path has no per-token ones)."""
        if self.token_logprobs is not None:
            return self.token_logprobs[action]
        return (self.scores[action],)

    def scores_by_name(self) -> dict[str, float]:
        return {action.value: score for action, score in self.scores.items()}


def argmax(scores: Mapping[Action, float]) -> Action:
    """The best-scored action; on an exact tie, the first in ``scores``' order."""
    return max(scores, key=lambda action: scores[action])


class Scorer(ABC):
    """Scores every candidate continuation of a prompt; one instance per endpoint."""

    @abstractmethod
    async def score(self, prompt: str, candidates: dict[Action, str]) -> ScoreResult:
        """Scores of ``candidates`` (from ``prompt.candidate_completions()``) as continuations of ``prompt``."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the HTTP client."""


class EndpointScorer(Scorer):
    """A scorer asking one endpoint in one way (one path, one method)."""

    path: ClassVar[ScoringPath]
    method: ClassVar[str]

    def __init__(self, endpoint: OpenAIEndpoint) -> None:
        self.endpoint = endpoint

    async def aclose(self) -> None:
        await self.endpoint.aclose()

    def _result(
        self,
        scores: dict[Action, float],
        answer: dict[str, Any],
        token_logprobs: dict[Action, tuple[float, ...]] | None = None,
    ) -> ScoreResult:
        return ScoreResult(scores, self.path, argmax(scores), 1, self.method, completion_tokens(answer), token_logprobs)


T = TypeVar("T")


def common_prefix_length(sequences: Sequence[Sequence[T]], limit: int | None = None) -> int:
    """How many leading items all ``sequences`` share (at most ``limit``)."""
    shortest = min(len(sequence) for sequence in sequences)
    bound = shortest if limit is None else min(shortest, limit)
    first = sequences[0]
    length = 0
    while length < bound and all(sequence[length] == first[length] for sequence in sequences):
        length += 1
    return length


# --- prompt_logprobs, by token ids (vLLM, prefix-cache friendly) ---------------------------------


class CachedPromptLogprobScorer(EndpointScorer):
    """Eq. 5 exactly, read through vLLM's prefix cache (vLLM extensions; see the module docstring).

    1. ``POST /tokenize`` (vLLM, at the server root) the prompt and each prompt + candidate: the
       server's own tokens, so a token merging the prompt's end with a candidate is handled (the
       candidate's tokens are all those after the prefix the tokenizations share).
    2. One ``POST /v1/completions`` whose prompts are the token-id contexts before each candidate token
       (the shared prefix, then the prefix plus the first tokens of longer candidates), with
       ``max_tokens: 1``, ``logprobs: 1``, ``logprob_token_ids`` (the candidates' tokens) and
       ``return_tokens_as_token_ids``. A candidate's score is the sum of its tokens' log-probabilities.
       Every context starts with the same prompt, which the prefix cache then holds.
    """

    path = ScoringPath.PROMPT_LOGPROBS
    method = "token_ids"

    async def score(self, prompt: str, candidates: dict[Action, str]) -> ScoreResult:
        actions = list(candidates)
        texts = [prompt, *(prompt + candidates[action] for action in actions)]
        # All tokenizations finish (they take milliseconds) before a failure is raised: none is left in flight.
        tokenized = await asyncio.gather(*(self._tokenize(text) for text in texts), return_exceptions=True)
        for outcome in tokenized:
            if isinstance(outcome, BaseException):
                raise outcome
        prompt_ids, *candidate_ids = [outcome for outcome in tokenized if isinstance(outcome, list)]
        contexts, targets = logprob_contexts(prompt_ids, candidate_ids)
        answer = await self.endpoint.post(
            "/completions",
            {
                "prompt": contexts,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": 1,
                "logprob_token_ids": sorted({token for wanted in targets for _, token in wanted}),
                "return_tokens_as_token_ids": True,
            },
        )
        tables = [_token_id_logprobs(choice) for choice in choices(answer, len(contexts))]
        per_token: dict[Action, tuple[float, ...]] = {}
        for action, wanted in zip(actions, targets, strict=True):
            try:
                per_token[action] = tuple(tables[context][token] for context, token in wanted)
            except KeyError as missing:
                raise PathUnsupported(f"the endpoint ignored logprob_token_ids (no token {missing})") from None
        return self._result({action: math.fsum(values) for action, values in per_token.items()}, answer, per_token)

    async def _tokenize(self, text: str) -> list[int]:
        try:
            answer = await self.endpoint.post(f"{self.endpoint.root_url}/tokenize", {"prompt": text})
        except PathUnsupported as error:
            raise PathUnsupported(f"no vLLM tokenizer route: {error}", requests=0) from error
        tokens = answer.get("tokens")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(token, int) for token in tokens):
            raise PathUnsupported("/tokenize answered no token ids", requests=0)
        return tokens


def logprob_contexts(
    prompt_ids: Sequence[int], candidate_ids: Sequence[Sequence[int]]
) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """The distinct token contexts to ask for, and per candidate its (context index, next token) pairs.

    The candidate's tokens are those after the prefix shared by the prompt's and every candidate's
    tokenization, so each candidate is scored over the same text after the same tokens.
    """
    shared = common_prefix_length([prompt_ids, *candidate_ids])
    if shared < 1:
        raise ScoringError("the candidates' tokens start at the first token, which has no log-probability")
    contexts: dict[tuple[int, ...], int] = {}
    targets: list[list[tuple[int, int]]] = []
    for ids in candidate_ids:
        if len(ids) <= shared:
            raise ScoringError("a candidate adds no token to the prompt")
        wanted = []
        for position in range(shared, len(ids)):
            context = contexts.setdefault(tuple(ids[:position]), len(contexts))
            wanted.append((context, ids[position]))
        targets.append(wanted)
    return [list(context) for context in contexts], targets


def _token_id_logprobs(choice: dict[str, Any]) -> dict[int, float]:
    """{token id: log-prob} of the choice's first generated position (``return_tokens_as_token_ids``)."""
    logprobs = choice.get("logprobs")
    tops = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(tops, list) or not tops or not isinstance(tops[0], dict):
        raise PathUnsupported("the completion has no log-probabilities")
    table: dict[int, float] = {}
    for key, value in tops[0].items():
        number = key.removeprefix(TOKEN_ID_PREFIX) if isinstance(key, str) else ""
        if not (key.startswith(TOKEN_ID_PREFIX) and number.isdigit() and isinstance(value, int | float)):
            raise PathUnsupported("the endpoint ignored return_tokens_as_token_ids")
        table[int(number)] = float(value)
    return table


# --- prompt_logprobs, by echo (the OpenAI legacy-completions way) --------------------------------


class PromptLogprobScorer(EndpointScorer):
    """Eq. 5 exactly, from the log-probabilities of the echoed prompt + candidate tokens.

    One ``POST /completions`` with ``prompt: [prompt + candidate, ...]``, ``echo: true``,
    ``logprobs: 1``, ``max_tokens: 0``, ``temperature: 0``. vLLM 0.32 accepts ``max_tokens: 0`` only
    with ``echo`` (it then decodes one token internally, counted in ``usage.completion_tokens``, and
    returns only the prompt); ``logprobs`` also sets its ``prompt_logprobs`` extension under ``echo``.
    Portable to servers with OpenAI's legacy echo, but vLLM reads no prefix cache for it (slow).
    """

    path = ScoringPath.PROMPT_LOGPROBS
    method = "echo"

    async def score(self, prompt: str, candidates: dict[Action, str]) -> ScoreResult:
        actions = list(candidates)
        answer = await self.endpoint.post(
            "/completions",
            {
                "prompt": [prompt + candidates[action] for action in actions],
                "max_tokens": 0,
                "temperature": 0.0,
                "echo": True,
                "logprobs": 1,
            },
        )
        sequences = [_echoed_tokens(choice) for choice in choices(answer, len(actions))]
        spans = [
            candidate_token_span(tokens, prompt, candidates[action])
            for (tokens, _), action in zip(sequences, actions, strict=True)
        ]
        start = common_prefix_length([tokens for tokens, _ in sequences], limit=min(first for first, _ in spans))
        if start < 1:
            raise ScoringError("the candidate starts at the first token, which has no log-probability")
        per_token: dict[Action, tuple[float, ...]] = {}
        for action, (_, logprobs), (_, end) in zip(actions, sequences, spans, strict=True):
            selected = logprobs[start:end]
            if any(value is None for value in selected):
                raise ScoringError("malformed answer: a candidate token has no log-probability")
            per_token[action] = tuple(value for value in selected if value is not None)
        return self._result({action: math.fsum(values) for action, values in per_token.items()}, answer, per_token)


def _echoed_tokens(choice: dict[str, Any]) -> tuple[list[str], list[float | None]]:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or not logprobs.get("tokens"):
        raise PathUnsupported("the completion has no echoed prompt log-probabilities")
    tokens = logprobs["tokens"]
    values = field(logprobs, "token_logprobs", "logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values):
        raise ScoringError("malformed answer: tokens and token_logprobs differ in length")
    if not all(isinstance(token, str) for token in tokens):
        raise ScoringError("malformed answer: a token is not a string")
    if not all(value is None or isinstance(value, int | float) for value in values):
        raise ScoringError("malformed answer: a token log-probability is not a number")
    return tokens, [None if value is None else float(value) for value in values]


def candidate_token_span(tokens: Sequence[str], prompt: str, candidate: str) -> tuple[int, int]:
    """Token indices [first, end) that cover ``candidate`` in the echo of ``prompt + candidate``.

    Character offsets are recomputed from the token texts and the text is found by search, so a BOS
    token before it or a generated token after it shifts nothing. A token merging the prompt's last
    characters with the candidate's first is included. The scorer then starts every candidate at the
    earliest such token, or earlier where the echoes' tokens first differ: before that index all
    echoes have the same tokens, so each score is the log-probability of the same text after the same
    context, and eq. 6 compares like with like even when only one candidate merged.
    """
    text = "".join(tokens)
    at = text.find(prompt + candidate)
    if at < 0:
        raise PathUnsupported("the echoed tokens do not spell the prompt and candidate")
    begin, finish = at + len(prompt), at + len(prompt) + len(candidate)
    first = end = None
    offset = 0
    for index, token in enumerate(tokens):
        offset += len(token)
        if first is None and offset > begin:
            first = index
        if offset >= finish:
            end = index + 1
            break
    if first is None or end is None:
        raise ScoringError(f"no token of the echo covers the candidate {candidate!r}")
    return first, end


# --- top_logprobs and constrained (chat) ---------------------------------------------------------


def candidate_word(candidate: str) -> str:
    """The candidate as a model would answer it: ``" offload"`` -> ``"offload"``."""
    return candidate.strip().lower()


class _ChatScorer(EndpointScorer):
    async def _chat(self, prompt: str, **params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the answer, its one choice) for ``prompt`` as the user message, greedy."""
        answer = await self.endpoint.post(
            "/chat/completions",
            {"messages": [{"role": "user", "content": prompt}], "temperature": 0.0, **params},
        )
        return answer, choices(answer, 1)[0]


class TopLogprobScorer(_ChatScorer):
    """The first answer token's top-20 alternatives, mapped to candidates (chat endpoints, GPT-4o).

    A token matches a candidate when, stripped and lower-cased, it is non-empty and the candidate
    word starts with it ("Local", " off", "o" all count). A candidate's score is the log of the summed
    probability of its matching tokens. A candidate with no matching alternative gets a floor: the
    smallest returned log-probability minus ``FLOOR_MARGIN`` (ln 2). Its true probability is at most
    that smallest one (it was not among the most likely), so the floor never outranks a candidate
    that was seen. If no candidate matches at all, the answer is none of them: ``UnparseableAnswer``.
    """

    path = ScoringPath.TOP_LOGPROBS
    method = "top_logprobs"

    async def score(self, prompt: str, candidates: dict[Action, str]) -> ScoreResult:
        answer, choice = await self._chat(prompt, max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS)
        return self._result(map_top_logprobs(_first_token_alternatives(choice), candidates), answer)


def _first_token_alternatives(choice: dict[str, Any]) -> list[tuple[str, float]]:
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content:
        raise PathUnsupported("the chat completion has no token log-probabilities")
    first = content[0]
    alternatives = first.get("top_logprobs") if isinstance(first, dict) else None
    if not alternatives:
        alternatives = [first]  # an endpoint without alternatives still gives the chosen token
    pairs: list[tuple[str, float]] = []
    for item in alternatives:
        token, value = field(item, "token", "a top log-prob"), field(item, "logprob", "a top log-prob")
        if not isinstance(token, str) or not isinstance(value, int | float):
            raise ScoringError("malformed answer: a top log-prob is not a (token, number) pair")
        pairs.append((token, float(value)))
    return pairs


def map_top_logprobs(
    alternatives: Sequence[tuple[str, float]], candidates: Mapping[Action, str]
) -> dict[Action, float]:
    """Candidate log-probabilities from the first token's (token, log-prob) alternatives; see ``TopLogprobScorer``."""
    if not alternatives:
        raise ScoringError("malformed answer: no top log-probs")
    floor = min(value for _, value in alternatives) - FLOOR_MARGIN
    scores: dict[Action, float] = {}
    for action, candidate in candidates.items():
        word = candidate_word(candidate)
        probability = math.fsum(
            math.exp(value)
            for token, value in alternatives
            if (piece := token.strip().lower()) and word.startswith(piece)
        )
        scores[action] = math.log(probability) if probability > 0.0 else floor
    if all(score == floor for score in scores.values()):
        raise UnparseableAnswer(alternatives[0][0], f"no top token starts a candidate: {alternatives[0][0]!r}")
    return scores


class ConstrainedAnswerScorer(_ChatScorer):
    """A short greedy answer that must be exactly one candidate word; no probabilities at all."""

    path = ScoringPath.CONSTRAINED
    method = "constrained"

    async def score(self, prompt: str, candidates: dict[Action, str]) -> ScoreResult:
        answer, choice = await self._chat(prompt, max_tokens=CONSTRAINED_MAX_TOKENS)
        content = field(field(choice, "message", "the choice"), "content", "the message")
        chosen = parse_constrained_answer(content if isinstance(content, str) else "", candidates)
        return self._result({action: 0.0 if action is chosen else -math.inf for action in candidates}, answer)


def parse_constrained_answer(answer: str, candidates: Mapping[Action, str]) -> Action:
    """The candidate ``answer`` is, stripped of whitespace and one trailing period, case-insensitively.

    Strict on purpose: "local because ..." or "maybe" is not a decision (``UnparseableAnswer``).
    """
    text = answer.strip().removesuffix(".").lower()
    for action, candidate in candidates.items():
        if text and text == candidate_word(candidate):
            return action
    raise UnparseableAnswer(answer)


# --- auto and the factory ------------------------------------------------------------------------


class AutoScorer(Scorer):
    """Tries its scorers best first; on ``PathUnsupported`` the next; remembers the first that worked.

    Later calls start at the remembered scorer (never retrying better ones the endpoint refused);
    should it be refused later, the next ones are tried. When every scorer is refused, or the last
    answers none of the candidates, the endpoint cannot score: ``CannotScore`` is raised, and raised at
    once without asking the endpoint for ``retry_after_s``; then all scorers are tried again. Any other
    error is raised as is and changes nothing: a timeout says nothing about what the endpoint supports.
    """

    def __init__(
        self,
        endpoint: OpenAIEndpoint,
        scorers: Sequence[type[EndpointScorer]],
        retry_after_s: float = CANNOT_SCORE_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not scorers:
            raise ValueError("AutoScorer needs at least one scorer")
        self.endpoint = endpoint
        self._scorers = [scorer(endpoint) for scorer in scorers]
        self._first = 0
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._cannot_until = -math.inf

    @property
    def current(self) -> EndpointScorer:
        """The scorer the next call starts with (the remembered one once a call succeeded)."""
        return self._scorers[self._first]

    async def score(self, prompt: str, candidates: dict[Action, str]) -> ScoreResult:
        remaining = self._cannot_until - self._clock()
        if remaining > 0:
            raise CannotScore(f"{self.endpoint.base_url} cannot score (tried again in {remaining:.0f} s)", remaining)
        requests = 0
        for index in range(self._first, len(self._scorers)):
            scorer = self._scorers[index]
            try:
                result = await scorer.score(prompt, candidates)
            except (PathUnsupported, UnparseableAnswer) as error:
                requests += getattr(error, "requests", 1)
                if index == len(self._scorers) - 1:
                    self._cannot_until = self._clock() + self.retry_after_s
                    self._first = 0
                    logger.warning(
                        "%s offers no way to score (%s: %s); decisions fall back for %.0f s",
                        self.endpoint.base_url, scorer.method, error, self.retry_after_s,
                    )  # fmt: skip
                    raise CannotScore(f"{self.endpoint.base_url} cannot score: {error}", self.retry_after_s) from error
                if isinstance(error, UnparseableAnswer):
                    raise
                logger.info("%s: %s unsupported (%s); trying the next", self.endpoint.base_url, scorer.method, error)
                continue
            if index != self._first:
                logger.info("%s: scoring by %s from now on", self.endpoint.base_url, scorer.method)
                self._first = index
            return dataclasses.replace(result, requests=requests + result.requests)
        raise AssertionError("unreachable: the last scorer returns or raises")

    async def aclose(self) -> None:
        await self.endpoint.aclose()


# The scorers each kind tries, best first ("prompt_logprobs" uses the fast vLLM way where it can).
SCORER_KINDS: dict[str, tuple[type[EndpointScorer], ...]] = {
    "auto": (CachedPromptLogprobScorer, PromptLogprobScorer, TopLogprobScorer, ConstrainedAnswerScorer),
    ScoringPath.PROMPT_LOGPROBS.value: (CachedPromptLogprobScorer, PromptLogprobScorer),
    ScoringPath.TOP_LOGPROBS.value: (TopLogprobScorer,),
    ScoringPath.CONSTRAINED.value: (ConstrainedAnswerScorer,),
}


def make_scorer(
    kind: str,
    base_url: str,
    model: str,
    api_key: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_after_s: float = CANNOT_SCORE_RETRY_S,
) -> Scorer:
    """A scorer for ``kind``: ``auto``, ``prompt_logprobs``, ``top_logprobs`` or ``constrained``.

    Kinds with more than one path are an ``AutoScorer``, which also remembers for ``retry_after_s`` an
    endpoint that cannot score. ``base_url`` includes ``/v1``. ``transport`` is a test seam
    (``httpx.MockTransport``).
    """
    if kind not in SCORER_KINDS:
        raise ValueError(f"unknown scorer kind {kind!r}; kinds are {list(SCORER_KINDS)}")
    endpoint = OpenAIEndpoint(base_url, model, api_key=api_key, timeout_s=timeout_s, transport=transport)
    scorers = SCORER_KINDS[kind]
    return scorers[0](endpoint) if len(scorers) == 1 else AutoScorer(endpoint, scorers, retry_after_s)
