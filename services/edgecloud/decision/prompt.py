"""Render the meta-prompt (section III-A) from ``templates/meta_prompt.j2``.

The prompt is built only from the closed keyword sets, the pool's examples (themselves closed-set
keywords, an action and numbers) and the query x. It takes no free text argument at all, so nothing a
user writes can reach it. The prompt ends right before the answer, so each candidate (" local",
" offload") can be scored as its continuation (eqs. 5-6).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources

import jinja2

from edgecloud.decision.experience import Experience
from edgecloud.decision.keywords import QUALITY_PREFERRED, TOKEN_BINS, Action, ServiceType, TaskState

TEMPLATE_NAME = "meta_prompt.j2"


@cache
def _template() -> jinja2.Template:
    source = resources.files("edgecloud.decision").joinpath("templates", TEMPLATE_NAME).read_text()
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    return environment.from_string(source)


def render_meta_prompt(state: TaskState, examples: Sequence[Experience]) -> str:
    """The exact text sent to the decision LLM for ``state`` with ``examples`` (without a candidate)."""
    return _template().render(
        service_types=[service_type.value for service_type in ServiceType],
        quality_preferred=sorted(service_type.value for service_type in QUALITY_PREFERRED),
        token_bins=TOKEN_BINS,
        examples=examples,
        state=state,
    )


def candidate_completions() -> dict[Action, str]:
    """Each candidate answer y as it continues the prompt (eq. 5 scores Pr(y | x, E, D))."""
    return {action: f" {action.value}" for action in Action}
