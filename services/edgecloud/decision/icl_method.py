"""How the ICL policy asks its LLM: which examples, what description, how the two answers are compared.

Section III-A of the paper fixes what a decision depends on (eqs. 5-7): the task description D, the
examples E and the query x. It leaves open which examples and in which order, and reads the answer by
the argmax of eq. 6. ``IclMethod`` makes each of those choices an option of the one ICL policy:

- ``selection`` and ``k``: the whole pool in pool order (the paper), or the k nearest examples in
  keyword space with the nearest last (``retrieval.py`` defines the distance);
- ``text``: the task description's two switches (``prompt.PromptText``);
- ``candidate_score``: a candidate's score from its tokens' log-probabilities: their sum (eq. 5,
  Pr(y | x, E, D)), the first token's alone, or their mean (length-normalised; " offload" is two
  tokens for SmolLM2, " local" one);
- ``calibrate``: contextual calibration (Zhao et al., ICML 2021, "Calibrate Before Use"): subtract each
  candidate's score under the content-free query ``(N/A, N/A)`` after the same examples. In log space
  that is their diagonal correction W = diag(p_cf)^-1; the argmax is unchanged by renormalising.

``PAPER_METHOD`` is the paper's method; ``DecisionSettings.icl_method()`` builds the shipped default,
chosen on the consistency grid (``benchmarks/decision_consistency.py``, numbers in docs/decision.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from edgecloud.core.vocabulary import Action, TaskState
from edgecloud.decision.experience import Experience
from edgecloud.decision.prompt import PAPER_TEXT, PromptText, render_meta_prompt
from edgecloud.decision.retrieval import ExampleSelection, select_examples
from edgecloud.decision.scoring import ScoreResult


class CandidateScore(StrEnum):
    SUM = "sum"
    """Eq. 5: the log-probability of the whole candidate."""
    FIRST_TOKEN = "first_token"
    MEAN = "mean"
    """Length-normalised: the mean log-probability per token."""

    def of(self, token_logprobs: Sequence[float]) -> float:
        if self is CandidateScore.FIRST_TOKEN:
            return token_logprobs[0]
        total = math.fsum(token_logprobs)
        return total / len(token_logprobs) if self is CandidateScore.MEAN else total


@dataclass(frozen=True)
class IclMethod:
    selection: ExampleSelection
    k: int
    """Examples shown under ``NEAREST`` (ignored under ``POOL``)."""
    text: PromptText
    candidate_score: CandidateScore
    calibrate: bool

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")

    def shown(self, examples: Sequence[Experience], state: TaskState) -> tuple[Experience, ...]:
        """The examples the meta-prompt for ``state`` shows, in the order shown."""
        return select_examples(examples, state, self.selection, self.k)

    def prompt(self, state: TaskState | None, shown: Sequence[Experience]) -> str:
        """The meta-prompt for ``state`` (None: the content-free query) after ``shown``."""
        return render_meta_prompt(state, shown, self.text)

    def scores(self, result: ScoreResult, content_free: ScoreResult | None = None) -> dict[Action, float]:
        """Each candidate's score for eq. 6, calibrated by the content-free query's result if given."""
        scores = {action: self.candidate_score.of(result.tokens_of(action)) for action in result.scores}
        if content_free is not None:
            scores = {
                action: score - self.candidate_score.of(content_free.tokens_of(action))
                for action, score in scores.items()
            }
        return scores


PAPER_METHOD = IclMethod(
    selection=ExampleSelection.POOL, k=1, text=PAPER_TEXT, candidate_score=CandidateScore.SUM, calibrate=False
)
"""Section III of the paper: the whole pool in pool order, its description, eq. 5's argmax, no calibration."""
