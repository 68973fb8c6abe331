"""Render the meta-prompt (section III-A) from ``templates/meta_prompt.j2``.

The prompt is built only from the closed keyword sets, the examples shown (themselves closed-set
keywords, an action and numbers) and the query x. It takes no free text argument at all, so nothing a
user writes can reach it. The prompt ends right before the answer, so each candidate (" local",
" offload") can be scored as its continuation (eqs. 5-6).

Two switches shape the task description D (eq. 7); ``PAPER_TEXT`` is the paper's text:
``name_candidates`` (the Task goal names "local" and "offload") and ``quality_hint`` (the Task
definition says that quality-preferred types need the cloud more often). docs/decision.md gives what
each costs a small decision LLM, measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import jinja2

from edgecloud.core.vocabulary import QUALITY_PREFERRED, TOKEN_BINS, Action, ServiceType, TaskState
from edgecloud.decision.experience import Experience

TEMPLATE_NAME = "meta_prompt.j2"
CONTENT_FREE = "N/A"
"""The keyword values of the content-free query (Zhao et al., ICML 2021, "Calibrate Before Use")."""


@dataclass(frozen=True)
class PromptText:
    """How the task description reads (see the module docstring)."""

    name_candidates: bool
    quality_hint: bool


PAPER_TEXT = PromptText(name_candidates=True, quality_hint=True)
"""The paper's task description: both switches on."""


@cache
def _template() -> jinja2.Template:
    source = resources.files("edgecloud.decision").joinpath("templates", TEMPLATE_NAME).read_text()
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    return environment.from_string(source)


def render_meta_prompt(state: TaskState | None, examples: Sequence[Experience], text: PromptText = PAPER_TEXT) -> str:
    """The exact text sent to the decision LLM for ``state`` with ``examples`` (without a candidate).

    ``state=None`` renders the content-free query ``(N/A, N/A)`` after the same examples.
    """
    return _template().render(
        service_types=[service_type.value for service_type in ServiceType],
        quality_preferred=sorted(service_type.value for service_type in QUALITY_PREFERRED),
        token_bins=TOKEN_BINS,
        examples=examples,
        query=state,
        content_free=CONTENT_FREE,
        name_candidates=text.name_candidates,
        quality_hint=text.quality_hint,
    )


def candidate_completions() -> dict[Action, str]:
    """Each candidate answer y as it continues the prompt (eq. 5 scores Pr(y | x, E, D))."""
    return {action: f" {action.value}" for action in Action}
