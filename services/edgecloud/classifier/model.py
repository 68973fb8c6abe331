"""The prompt classifier the gateway calls: MiniLM features, then a logistic-regression head.

``PromptClassifier.load()`` once at start-up (under a second: 90 MB of weights), then ``classify(text)``
per request: synchronous, CPU-bound, ~7 ms on one core; the gateway runs it in a worker thread
(``asyncio.to_thread``) so the event loop keeps relaying. Concurrent calls on one instance are safe (the
forward pass only reads the weights); they share the cores.

Features: the mean of MiniLM's hidden states after layer ``FEATURE_LAYERS`` (3 of 6), L2-normalised;
the forward pass stops there. Cross-validation on the training set (docs/classifier.md) gave:
the sentence embedding (layer 6, what sentence-transformers returns) 0.90 accuracy; layer 3 alone 0.965;
both together 0.966. The sentence embedding is trained for semantic similarity, so it is mostly *topic*
("explain this error" lands near whatever the text is about); the middle layers still carry the *task
words* (translate, tl;dr, extract, solve, write a function), and the last three layers add nothing here
but half the cost. ``scripts/train_classifier.py --layers 6 3`` fits the full-depth variant instead.

The encoder keeps ``MAX_TOKENS`` tokens of a prompt, its head and its tail (see ``encoder.py``): the
cost is linear in the tokens kept and 32 keeps the 99th percentile under the 15 ms budget, while
cross-validation accuracy was about the same from 24 to 256 tokens. Prompts of up to 30 tokens (most
chat turns) are read whole. Budget, truncation and layers are stored with the head's weights, so a head
is always used with the features it was fitted on.

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

from edgecloud.classifier.encoder import MiniLMEncoder, Truncation
from edgecloud.core.vocabulary import ServiceType

DATA_DIR = Path(__file__).resolve().parent / "data"
WEIGHTS_PATH = DATA_DIR / "classifier.npz"
TRAIN_PATH = DATA_DIR / "prompts_train.jsonl"
TEST_PATH = DATA_DIR / "prompts_test.jsonl"

# What the training script fits a head for (why: module docstring). Layer 0 is the embedding output,
# layer 6 MiniLM-L6's last (the sentence embedding).
MAX_TOKENS = 32
TRUNCATION = Truncation.HEAD_TAIL
FEATURE_LAYERS: tuple[int, ...] = (3,)
EMPTY_SERVICE_TYPE = ServiceType.CHAT
EMPTY_CONFIDENCE = 1.0 / len(ServiceType)

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Classification:
    service_type: ServiceType
    confidence: float  # the head's probability of service_type
    latency_s: float  # wall time of this classification, tokenisation included


@dataclass(frozen=True)
class LinearHead:
    """Multinomial logistic regression over pooled MiniLM layers, with the encoder settings it was fit for."""

    classes: tuple[ServiceType, ...]
    weights: Vector  # (len(layers) * hidden, classes)
    bias: Vector  # (classes,)
    max_tokens: int
    truncation: Truncation
    layers: tuple[int, ...]

    def probabilities(self, features: Vector) -> Vector:
        logits = features @ self.weights + self.bias
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32, copy=False)

    def save(self, path: Path, **provenance: str | float | int) -> None:
        """Weights plus what reproduces them (training file hash, L2, ...): plain arrays, loadable without pickle."""
        arrays: dict[str, Any] = {
            "classes": np.array([c.value for c in self.classes]),
            "weights": self.weights.astype(np.float32),
            "bias": self.bias.astype(np.float32),
            "max_tokens": np.int64(self.max_tokens),
            "truncation": np.str_(self.truncation.value),
            "layers": np.array(self.layers, dtype=np.int64),
            **{key: np.asarray(value) for key, value in provenance.items()},
        }
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                classes=tuple(ServiceType(str(c)) for c in data["classes"]),
                weights=data["weights"].astype(np.float32),
                bias=data["bias"].astype(np.float32),
                max_tokens=int(data["max_tokens"]),
                truncation=Truncation(str(data["truncation"])),
                layers=tuple(int(layer) for layer in data["layers"]),
            )


def features(encoder: MiniLMEncoder, texts: Sequence[str], layers: Sequence[int]) -> Vector:
    """The head's input for many texts, (texts, len(layers) * hidden): training and evaluation."""
    return encoder.pooled_batch(list(texts), layers).reshape(len(texts), -1)


class PromptClassifier:
    """Prompt text to one of the decision's service types, with a confidence and the time it took."""

    def __init__(
        self, encoder: MiniLMEncoder, head: LinearHead, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        if (encoder.max_tokens, encoder.truncation) != (head.max_tokens, head.truncation):
            raise ValueError(
                f"head was trained on {head.max_tokens} tokens ({head.truncation}), "
                f"encoder keeps {encoder.max_tokens} ({encoder.truncation})"
            )
        self.encoder = encoder
        self.head = head
        self.clock = clock

    @classmethod
    def load(cls, weights_path: Path = WEIGHTS_PATH, model_dir: Path | None = None) -> PromptClassifier:
        head = LinearHead.load(weights_path)
        return cls(MiniLMEncoder.load(model_dir, head.max_tokens, head.truncation), head)

    def classify(self, text: str) -> Classification:
        start = self.clock()
        if not text.strip():
            return Classification(EMPTY_SERVICE_TYPE, EMPTY_CONFIDENCE, self.clock() - start)
        probabilities = self.head.probabilities(self.encoder.pooled(text, self.head.layers).reshape(-1))
        best = int(probabilities.argmax())
        return Classification(self.head.classes[best], float(probabilities[best]), self.clock() - start)

    def probabilities(self, texts: Sequence[str]) -> Vector:
        """Probabilities of many non-empty texts, (texts, classes), in batches (evaluation, not the request path)."""
        return self.head.probabilities(features(self.encoder, texts, self.head.layers))
