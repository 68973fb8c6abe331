"""Which pool examples the meta-prompt shows for a query x, and in which order.

The paper shows the whole pool (section III-A, step 4). A 135M decision LLM does not read 35 examples
well: it follows the description's hint and its own bias instead (BENCHMARKS.md, "How often the real
small model follows the pool"). Showing only the k examples nearest to x, the nearest last, lets its
copying of the closest precedent work for it (Liu et al., "What Makes Good In-Context Examples for
GPT-3?", DeeLIO 2022: nearest-neighbour examples; Zhao et al., ICML 2021: a recency bias toward the
last examples) and shortens the prompt.

The distance between two keyword states (eq. 8) counts what changes the right decision:

    d(x, e) = |bin(x) - bin(e)| + TYPE_STEP * [type(x) != type(e)] + CLASS_STEP * [class(x) != class(e)]

bin() is the index of the output-length bin (adjacent bins differ by 1), class is regular or
quality-preferred. The same type one bin away (d = 1) is nearer than another type of the same class in
the same bin (d = 2): the quality requirement belongs to the type, the delay to the bin, and the
quality constraint (4e) flips a decision outright where a bin only shifts the delays. Of examples at
the same distance the later one in the sequence is nearer (pool order is by keyword key; in the
latest-experience baseline later is newer), so the selection is a function of the examples and x alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from edgecloud.core.vocabulary import TOKEN_BINS, TaskState
from edgecloud.decision.experience import Experience

TYPE_STEP = 2
"""Added to the distance when the service types differ."""
CLASS_STEP = 2
"""Added again when they also differ in task class (regular vs quality-preferred)."""


class ExampleSelection(StrEnum):
    POOL = "pool"
    """The paper's method: every example, in pool order."""
    NEAREST = "nearest"
    """The k examples nearest to x, the nearest last."""


def keyword_distance(query: TaskState, example: TaskState) -> int:
    """d(x, e) of the module docstring: 0 for the same keywords."""
    distance = abs(TOKEN_BINS.index(query.token_bin) - TOKEN_BINS.index(example.token_bin))
    if query.service_type is not example.service_type:
        distance += TYPE_STEP
        if query.service_type.quality_preferred != example.service_type.quality_preferred:
            distance += CLASS_STEP
    return distance


def select_examples(
    examples: Sequence[Experience], query: TaskState, selection: ExampleSelection, k: int
) -> tuple[Experience, ...]:
    """The examples to show for ``query``: all in pool order, or the ``k`` nearest with the nearest last."""
    if selection is ExampleSelection.POOL:
        return tuple(examples)
    ranked = sorted(enumerate(examples), key=lambda item: (keyword_distance(query, item[1].state), -item[0]))
    return tuple(example for _, example in reversed(ranked[:k]))
