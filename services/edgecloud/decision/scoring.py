"""Score the candidate answers y of the meta-prompt with an LLM over the OpenAI API (eqs. 5-6).

Eq. 5 asks for Pr(y | x, E, D) of each candidate y; eq. 6 takes the argmax. Three paths get it from
what an endpoint offers, best first:

- ``prompt_logprobs``: the exact eq. 5. One batched ``POST /completions`` with every prompt +
  candidate, ``echo`` and ``logprobs`` and ``max_tokens: 0``: the endpoint returns the log-probability
  of every prompt token and generates no text (vLLM; its prefix cache makes the shared prompt cheap).
- ``top_logprobs``: chat endpoints without prompt log-probabilities (GPT-4o): one chat completion of
  one token with its 20 most likely alternatives, mapped to candidates.
- ``constrained``: no log-probabilities at all: a short greedy answer, parsed strictly.

``make_scorer("auto", ...)`` tries them in that order and remembers the first one the endpoint
supports. Every failure is a ``ScoringError``, so the decision service can fall back. No prompt text
is logged (the prompt holds only closed-set keywords and numbers anyway, see ``prompt.py``).
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from edgecloud.decision.keywords import Action

logger = logging.getLogger(__name__)

# Ours: a decision is one short request; a CPU vLLM scoring a ~1,200-token prompt needs a few seconds.
DEFAULT_TIMEOUT_S = 30.0
# OpenAI's maximum for chat ``top_logprobs`` (and vLLM's default ``--max-logprobs``).
TOP_LOGPROBS = 20
# The unseen candidate's floor sits this many nats below the smallest returned log-probability.
FLOOR_MARGIN = math.log(2.0)
# "local"/"offload" plus a period or a space fit in 3 tokens; more would only let the model explain.
CONSTRAINED_MAX_TOKENS = 3
# Status codes with which an endpoint says it does not offer a path (bad parameter, no such route).
UNSUPPORTED_STATUS = frozenset({400, 404, 422})
# How much of an endpoint's error message goes into an exception (the body is never logged).
ERROR_SNIPPET_CHARS = 200


class ScoringError(Exception):
    """Scoring failed (transport, status, malformed answer); the decision service falls back."""


class PathUnsupported(ScoringError):
    """The endpoint does not offer this path (HTTP 400/404/422, or no log-probabilities in its answer)."""


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
    """LLM requests made for this result (AutoScorer counts the probes of paths that were rejected)."""

    def scores_by_name(self) -> dict[str, float]:
        return {action.value: score for action, score in self.scores.items()}


def argmax(scores: Mapping[Action, float]) -> Action:
    """The best-scored action; on an exact tie, the first in ``scores``' order."""
    return max(scores, key=lambda action: scores[action])


class OpenAIEndpoint:
    """One OpenAI-compatible base URL (with ``/v1``) and model, over one shared ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    async def post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` (plus the model) to ``route``; the parsed JSON answer, or a ``ScoringError``."""
        started = time.perf_counter()
        try:
            response = await self._client.post(route, json={"model": self.model, **body})
        except httpx.HTTPError as error:
            raise ScoringError(f"{route} at {self.base_url}: {type(error).__name__}: {error}") from error
        logger.debug("POST %s -> %d in %.3f s", route, response.status_code, time.perf_counter() - started)
        if response.status_code != 200:
            detail = f"{route} at {self.base_url}: HTTP {response.status_code}: {_error_message(response)}"
            if response.status_code in UNSUPPORTED_STATUS:
                raise PathUnsupported(detail)
            raise ScoringError(detail)
        try:
            answer = response.json()
        except ValueError as error:
            raise ScoringError(f"{route} at {self.base_url}: answer is not JSON") from error
        if not isinstance(answer, dict):
            raise ScoringError(f"{route} at {self.base_url}: answer is not a JSON object")
        return answer

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_message(response: httpx.Response) -> str:
    """The OpenAI-shaped error's message if there is one, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:ERROR_SNIPPET_CHARS]
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if message is None and isinstance(body, dict):
        message = body.get("message")
    return str(message if message is not None else body)[:ERROR_SNIPPET_CHARS]


class Scorer(ABC):
    """Scores every candidate continuation of a prompt; one instance per endpoint."""

    path: ScoringPath

    def __init__(self, endpoint: OpenAIEndpoint) -> None:
        self.endpoint = endpoint

    @abstractmethod
    async def score(self, prompt: str, candidates: dict[Action, str]) -> ScoreResult:
        """Scores of ``candidates`` (from ``prompt.candidate_completions()``) as continuations of ``prompt``."""

    async def aclose(self) -> None:
        await self.endpoint.aclose()

    def _result(self, scores: dict[Action, float], requests: int = 1) -> ScoreResult:
        return ScoreResult(scores=scores, path=self.path, action=argmax(scores), requests=requests)


def _field(value: Any, key: str, what: str) -> Any:
    """``value[key]``, or a ``ScoringError`` naming ``what`` was malformed."""
    if not isinstance(value, dict) or key not in value:
        raise ScoringError(f"malformed answer: {what} has no {key!r}")
    return value[key]


def _choices(answer: dict[str, Any], expected: int) -> list[dict[str, Any]]:
    choices = _field(answer, "choices", "the answer")
    if not isinstance(choices, list) or len(choices) != expected:
        raise ScoringError(f"malformed answer: expected {expected} choice(s)")
    if not all(isinstance(choice, dict) for choice in choices):
        raise ScoringError("malformed answer: a choice is not an object")
    return sorted(choices, key=lambda choice: choice.get("index", 0))


class PromptLogprobScorer(Scorer):
    """Eq. 5 exactly, from the log-probabilities of the echoed prompt + candidate tokens (vLLM).

    vLLM 0.32 accepts ``echo: true`` with ``max_tokens: 0`` (it runs one decode step internally, so
    ``usage.completion_tokens`` is 1, but returns only the prompt: no text is generated) and
    ``logprobs: 1``, which it also applies to the prompt (its ``prompt_logprobs`` extension defaults
    to ``logprobs`` under ``echo``).
    """

    path = ScoringPath.PROMPT_LOGPROBS

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
        choices = _choices(answer, len(actions))
        sequences = [_echoed_tokens(choice) for choice in choices]
        spans = [
            candidate_token_span(tokens, prompt, candidates[action])
            for (tokens, _), action in zip(sequences, actions, strict=True)
        ]
        start = common_start([tokens for tokens, _ in sequences], [first for first, _ in spans])
        scores: dict[Action, float] = {}
        for action, (_, logprobs), (_, end) in zip(actions, sequences, spans, strict=True):
            selected = logprobs[start:end]
            if any(value is None for value in selected):
                raise ScoringError("malformed answer: a candidate token has no log-probability")
            scores[action] = math.fsum(float(value) for value in selected if value is not None)
        return self._result(scores)


def _echoed_tokens(choice: dict[str, Any]) -> tuple[list[str], list[float | None]]:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or not logprobs.get("tokens"):
        raise PathUnsupported("the completion has no echoed prompt log-probabilities")
    tokens = logprobs["tokens"]
    values = _field(logprobs, "token_logprobs", "logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values):
        raise ScoringError("malformed answer: tokens and token_logprobs differ in length")
    if not all(isinstance(token, str) for token in tokens):
        raise ScoringError("malformed answer: a token is not a string")
    if not all(value is None or isinstance(value, int | float) for value in values):
        raise ScoringError("malformed answer: a token log-probability is not a number")
    return tokens, values


def candidate_token_span(tokens: Sequence[str], prompt: str, candidate: str) -> tuple[int, int]:
    """Token indices [first, end) that cover ``candidate`` in the echo of ``prompt + candidate``.

    Character offsets are recomputed from the token texts, not taken from ``text_offset``, and the
    text is located by search: a BOS token the server adds before it, or a token it generated after
    it, shift nothing. A token that merges the prompt's last characters with the candidate's first is
    included (it is where the candidate begins).
    """
    text = "".join(tokens)
    at = text.find(prompt + candidate)
    if at < 0:
        raise PathUnsupported("the echoed tokens do not spell the prompt and candidate")
    begin, finish = at + len(prompt), at + len(prompt) + len(candidate)
    first = end = None
    offset = 0
    for index, token in enumerate(tokens):
        token_end = offset + len(token)
        if first is None and token_end > begin:
            first = index
        if token_end >= finish:
            end = index + 1
            break
        offset = token_end
    if first is None or end is None or first >= end:
        raise ScoringError(f"no token of the echo covers the candidate {candidate!r}")
    return first, end


def common_start(sequences: Sequence[Sequence[str]], firsts: Sequence[int]) -> int:
    """The token index from which every candidate is scored: the earliest candidate token, or where the
    token sequences first differ if that is earlier (a merge at the boundary tokenized differently).

    Before it, every sequence has the same tokens, so each score is the log-probability of the same
    span of text after the same context: the comparison of eq. 6 is exact even with merges.
    """
    start = min(firsts)
    if len(sequences) > 1:
        shared = 0
        while shared < start and all(len(s) > shared and s[shared] == sequences[0][shared] for s in sequences):
            shared += 1
        start = shared
    if start < 1:
        raise ScoringError("the candidate starts at the first token, which has no log-probability")
    return start


def candidate_word(candidate: str) -> str:
    """The candidate as a model would answer it: ``" offload"`` -> ``"offload"``."""
    return candidate.strip().lower()


class _ChatScorer(Scorer):
    async def _chat(self, prompt: str, **params: Any) -> dict[str, Any]:
        answer = await self.endpoint.post(
            "/chat/completions",
            {"messages": [{"role": "user", "content": prompt}], "temperature": 0.0, **params},
        )
        return _choices(answer, 1)[0]


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

    async def score(self, prompt: str, candidates: dict[Action, str]) -> ScoreResult:
        choice = await self._chat(prompt, max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS)
        return self._result(map_top_logprobs(_first_token_alternatives(choice), candidates))


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
        token, value = _field(item, "token", "a top log-prob"), _field(item, "logprob", "a top log-prob")
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
    matched = False
    for action, candidate in candidates.items():
        word = candidate_word(candidate)
        probability = math.fsum(
            math.exp(value)
            for token, value in alternatives
            if (piece := token.strip().lower()) and word.startswith(piece)
        )
        matched = matched or probability > 0.0
        scores[action] = math.log(probability) if probability > 0.0 else floor
    if not matched:
        raise UnparseableAnswer(alternatives[0][0], f"no top token starts a candidate: {alternatives[0][0]!r}")
    return scores


class ConstrainedAnswerScorer(_ChatScorer):
    """A short greedy answer that must be exactly one candidate word; no probabilities at all."""

    path = ScoringPath.CONSTRAINED

    async def score(self, prompt: str, candidates: dict[Action, str]) -> ScoreResult:
        choice = await self._chat(prompt, max_tokens=CONSTRAINED_MAX_TOKENS)
        content = _field(_field(choice, "message", "the choice"), "content", "the message")
        chosen = parse_constrained_answer(content if isinstance(content, str) else "", candidates)
        return self._result({action: 0.0 if action is chosen else -math.inf for action in candidates})


def parse_constrained_answer(answer: str, candidates: Mapping[Action, str]) -> Action:
    """The candidate ``answer`` is, stripped of whitespace and one trailing period, case-insensitively.

    Strict on purpose: "local because ..." or "maybe" is not a decision (``UnparseableAnswer``).
    """
    text = answer.strip().removesuffix(".").lower()
    for action, candidate in candidates.items():
        if text and text == candidate_word(candidate):
            return action
    raise UnparseableAnswer(answer)


PATH_ORDER: tuple[ScoringPath, ...] = (
    ScoringPath.PROMPT_LOGPROBS,
    ScoringPath.TOP_LOGPROBS,
    ScoringPath.CONSTRAINED,
)
SCORER_CLS: dict[ScoringPath, type[Scorer]] = {
    ScoringPath.PROMPT_LOGPROBS: PromptLogprobScorer,
    ScoringPath.TOP_LOGPROBS: TopLogprobScorer,
    ScoringPath.CONSTRAINED: ConstrainedAnswerScorer,
}


class AutoScorer(Scorer):
    """Tries the paths best first; on ``PathUnsupported`` the next; remembers the first that worked.

    Later calls start at the remembered path (never retrying the better paths the endpoint refused);
    should that path be refused later, the next ones are tried. Any other error is raised as is and
    changes nothing: a timeout says nothing about what the endpoint supports.
    """

    def __init__(self, endpoint: OpenAIEndpoint) -> None:
        super().__init__(endpoint)
        self._scorers = [SCORER_CLS[path](endpoint) for path in PATH_ORDER]
        self._first = 0

    @property
    def path(self) -> ScoringPath:  # type: ignore[override]
        """The path the next call starts with (the remembered one once a call succeeded)."""
        return PATH_ORDER[self._first]

    async def score(self, prompt: str, candidates: dict[Action, str]) -> ScoreResult:
        requests = 0
        for index in range(self._first, len(self._scorers)):
            scorer = self._scorers[index]
            requests += 1
            try:
                result = await scorer.score(prompt, candidates)
            except PathUnsupported as error:
                if index == len(self._scorers) - 1:
                    raise
                logger.info("%s: path %s unsupported (%s); trying the next", self.endpoint.base_url, scorer.path, error)
                continue
            if index != self._first:
                logger.info("%s: scoring with path %s from now on", self.endpoint.base_url, scorer.path)
                self._first = index
            return ScoreResult(result.scores, result.path, result.action, requests)
        raise AssertionError("unreachable: the last path returns or raises")


SCORER_KINDS: tuple[str, ...] = ("auto", *(path.value for path in PATH_ORDER))


def make_scorer(
    kind: str,
    base_url: str,
    model: str,
    api_key: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Scorer:
    """A scorer for ``kind`` (``auto``, ``prompt_logprobs``, ``top_logprobs`` or ``constrained``).

    ``transport`` is a test seam (``httpx.MockTransport``); the real one is used when it is None.
    """
    if kind not in SCORER_KINDS:
        raise ValueError(f"unknown scorer kind {kind!r}; kinds are {list(SCORER_KINDS)}")
    endpoint = OpenAIEndpoint(base_url, model, api_key=api_key, timeout_s=timeout_s, transport=transport)
    if kind == "auto":
        return AutoScorer(endpoint)
    return SCORER_CLS[ScoringPath(kind)](endpoint)
