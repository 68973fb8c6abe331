"""The prompt classifier the gateway calls: static MiniLM features, then a logistic-regression head.

``PromptClassifier.load()`` once at start-up, then ``classify(text)`` per request: synchronous and cheap
(0.13 ms at the median, 0.39 ms at p99 over the held-out prompts on one core; a megabyte prompt, cut, up
to ~0.8 ms: docs/classifier.md), so the gateway can call it inline. Concurrent calls on one instance are
safe: nothing is written after loading.

Why static features and not MiniLM itself: the type of a request is carried by a few task words
(translate, tl;dr, extract, solve, write a function). A table of each token's MiniLM vector, pooled, plus
indicators of the training prompts' words, cross-validates as well as MiniLM's layer 3 in context and is
better on the harder held-out set (docs/classifier.md), at a fiftieth of the cost: a 3-layer forward pass
over 32 tokens is ~340 MFLOP, ~7 ms on one core; summing table rows takes microseconds, and most of the
time left goes to tokenising. So the whole prompt is read (up to ``FeatureSpec.max_chars``), not 32
tokens of it.

Empty or whitespace-only text (including token-id prompts, see ``request_text.py``) carries no signal:
it is ``chat``, the cheapest type for the decision (regular, served locally), with confidence
``1 / len(ServiceType)``, the uniform prior: "no information", so a caller can treat it as a guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgecloud.classifier.static import FeatureSpec, StaticFeatures, StaticTable
from edgecloud.core.vocabulary import ServiceType

DATA_DIR = Path(__file__).resolve().parent / "data"
WEIGHTS_PATH = DATA_DIR / "classifier.npz"
TABLE_PATH = DATA_DIR / "static_table.npz"
TRAIN_PATH = DATA_DIR / "prompts_train.jsonl"
TEST_PATH = DATA_DIR / "prompts_test.jsonl"
HELDOUT2_PATH = DATA_DIR / "prompts_heldout2.jsonl"
HELDOUT3_PATH = DATA_DIR / "prompts_heldout3.jsonl"
# The held-out sets by name (data/README.md): never trained on, never used for a choice.
HELD_OUT_PATHS = {"test": TEST_PATH, "heldout2": HELDOUT2_PATH, "heldout3": HELDOUT3_PATH}

EMPTY_SERVICE_TYPE = ServiceType.CHAT
EMPTY_CONFIDENCE = 1.0 / len(ServiceType)

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Classification:
    service_type: ServiceType
    confidence: float  # the head's probability of service_type
    latency_s: float  # wall time of this classification, tokenisation included


def softmax(logits: Vector) -> Vector:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class LinearHead:
    """Multinomial logistic regression over the static features, with the feature settings it was fit for."""

    classes: tuple[ServiceType, ...]
    weights: Vector  # (dense features + words, classes)
    bias: Vector  # (classes,)
    spec: FeatureSpec
    words: tuple[str, ...]  # the word features' columns, after the dense ones

    def probabilities(self, features: npt.NDArray[np.floating]) -> Vector:
        """Of feature rows (``StaticFeatures.matrix``), (rows, classes)."""
        return softmax((features @ self.weights + self.bias).astype(np.float32))

    def save(self, path: Path, **provenance: str | float | int) -> None:
        """Weights plus what reproduces them (training file hash, L2, ...): plain arrays, loadable without pickle."""
        arrays: dict[str, Any] = {
            "classes": np.array([c.value for c in self.classes]),
            "weights": self.weights.astype(np.float32),
            "bias": self.bias.astype(np.float32),
            "words": np.array(self.words, dtype=str),
            **self.spec.to_arrays(),
            **{key: np.asarray(value) for key, value in provenance.items()},
        }
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        if not path.exists():
            raise FileNotFoundError(f"{path}: the classifier's head is missing; scripts/train_classifier.py writes it")
        with np.load(path, allow_pickle=False) as data:
            return cls(
                classes=tuple(ServiceType(str(c)) for c in data["classes"]),
                weights=data["weights"].astype(np.float32),
                bias=data["bias"].astype(np.float32),
                spec=FeatureSpec.from_arrays(data),
                words=tuple(str(w) for w in data["words"]),
            )


class PromptClassifier:
    """Prompt text to one of the decision's service types, with a confidence and the time it took."""

    def __init__(
        self, features: StaticFeatures, head: LinearHead, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        if (features.spec, features.words) != (head.spec, head.words) or features.size != len(head.weights):
            raise ValueError(f"head was trained on other features ({head.spec}) than these ({features.spec})")
        self.features = features
        self.head = head
        self.clock = clock
        self._dense = np.ascontiguousarray(head.weights[: features.dense_size])
        self._words = np.ascontiguousarray(head.weights[features.dense_size :])

    @classmethod
    def load(cls, weights_path: Path = WEIGHTS_PATH, table_path: Path = TABLE_PATH) -> PromptClassifier:
        head = LinearHead.load(weights_path)
        return cls(StaticFeatures(StaticTable.load(table_path), head.spec, head.words), head)

    def classify(self, text: str) -> Classification:
        start = self.clock()
        if not text.strip():
            return Classification(EMPTY_SERVICE_TYPE, EMPTY_CONFIDENCE, self.clock() - start)
        dense, columns, value = self.features.encode(text)
        logits = dense @ self._dense + self.head.bias
        if columns:
            logits += self._words[columns].sum(axis=0) * np.float32(value)
        probabilities = softmax(logits)
        best = int(probabilities.argmax())
        return Classification(self.head.classes[best], float(probabilities[best]), self.clock() - start)

    def probabilities(self, texts: Sequence[str]) -> Vector:
        """Probabilities of many non-empty texts, (texts, classes): evaluation, not the request path."""
        return self.head.probabilities(self.features.matrix(texts))
