"""Fit the classifier head: multinomial logistic regression on the prompt features, in numpy.

Why logistic regression: it learns which directions of the embedding separate the *tasks*, so a chat
message about a maths exam can land on chat although its topic words sit near the maths prompts (a
nearest-centroid rule weighs every direction alike); its softmax is the confidence the gateway reports;
and it is one small matrix-vector product per request. The L2 strength is chosen by seeded, stratified k-fold
cross-validation on the training set only, by log-loss (so the confidences stay calibrated, not just
the argmax right); the held-out set is never read here.

The loss is convex and the optimiser deterministic (Nesterov's accelerated gradient from zero with
adaptive restart, a fixed number of steps), so the same embeddings give the same weights; the only
randomness is the fold split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgecloud.classifier.model import LinearHead
from edgecloud.classifier.static import FeatureSpec, Pooling
from edgecloud.core.vocabulary import ServiceType

Array = npt.NDArray[np.float64]

# The shipped features, chosen by ``scripts/train_classifier.py --sweep`` (docs/classifier.md). max_chars
# is set by latency instead: at 4,096 a megabyte prompt cost p99 0.56-0.81 ms (benchmarks/classifier.py,
# worst case), over the 0.5 ms budget; half of it halves that. No labelled prompt is that long (the longest
# has 1,252 characters), so it changes no feature of the data.
FEATURES = FeatureSpec(
    layer=3,
    dims=128,
    sif=0.0,
    pooling=(Pooling.MEAN, Pooling.HEAD, Pooling.TAIL),
    window=16,
    bow_scale=1.0,
    bow_power=0.25,
    max_chars=2048,
    prefix_chars=4,
)

SEED = 20260601
FOLDS = 5
# L2 strengths tried by cross-validation (per-sample mean loss + l2/2 * ||W||^2).
L2_GRID: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
# With restarts, enough to bring the gradient norm to ~1e-6 at the weakest L2 of the grid on the shipped
# training set (3e-6 measured; the training script prints it, the npz stores it).
ITERATIONS = 2000
# Columns with fewer non-zeros than this share are multiplied as sparse (SplitDesign): the word indicators.
SPARSE_DENSITY = 0.1
# The softmax cross-entropy's Hessian is at most 1/2 X^T X / n per class block: the step is 1/L with this L.
SOFTMAX_CURVATURE = 0.5


@dataclass(frozen=True)
class LabelledPrompt:
    id: str
    service_type: ServiceType
    text: str


def load_prompts(path: Path) -> list[LabelledPrompt]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [LabelledPrompt(row["id"], ServiceType(row["service_type"]), row["text"]) for row in rows]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def softmax(logits: Array) -> Array:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Fit:
    weights: Array  # (dim, classes)
    bias: Array  # (classes,)
    gradient_norm: float  # at the last step: how far from the optimum


class SplitDesign:
    """A design matrix as its dense columns and its sparse ones (the word indicators), for the products.

    The word block is ~2,400 columns with a few dozen non-zeros per row: as a dense matrix it is 20 times
    the work of the rest, and a fit of 2,000 steps took minutes instead of seconds.
    """

    def __init__(self, x: Array) -> None:
        sparse = (x != 0).mean(axis=0) < SPARSE_DENSITY
        self.dense_columns, self.sparse_columns = np.flatnonzero(~sparse), np.flatnonzero(sparse)
        self.dense = np.ascontiguousarray(x[:, self.dense_columns])
        self.rows, columns = np.nonzero(x[:, self.sparse_columns])
        self.columns = columns
        self.values = x[:, self.sparse_columns][self.rows, columns][:, None]
        self.shape = x.shape

    def matvec(self, theta: Array) -> Array:
        out = self.dense @ theta[self.dense_columns]
        np.add.at(out, self.rows, theta[self.sparse_columns][self.columns] * self.values)
        return out

    def rmatvec(self, g: Array) -> Array:
        out = np.zeros((self.shape[1], g.shape[1]))
        out[self.dense_columns] = self.dense.T @ g
        sparse = np.zeros((len(self.sparse_columns), g.shape[1]))
        np.add.at(sparse, self.columns, g[self.rows] * self.values)
        out[self.sparse_columns] = sparse
        return out


def fit_logistic_regression(x: Array, y: npt.NDArray[np.int64], classes: int, l2: float) -> Fit:
    """Minimise mean cross-entropy + l2/2 ||W||^2 (the bias is not penalised) by Nesterov's method.

    The momentum restarts whenever a step goes against the gradient (O'Donoghue & Candes, "Adaptive
    restart for accelerated gradient schemes", 2015): on this strongly convex loss it converges several
    times faster than plain Nesterov.
    """
    n, dim = x.shape
    augmented = np.hstack([x, np.ones((n, 1))])
    onehot = np.eye(classes)[y]
    # X^T X and X X^T have the same largest eigenvalue: take the smaller (word features make dim > n).
    gram = augmented.T @ augmented if dim < n else augmented @ augmented.T
    lipschitz = SOFTMAX_CURVATURE * float(np.linalg.eigvalsh(gram / n)[-1]) + l2
    step = 1.0 / lipschitz
    penalty = np.full((dim + 1, 1), l2)
    penalty[-1] = 0.0
    design = SplitDesign(augmented)

    def gradient(theta: Array) -> Array:
        return design.rmatvec(softmax(design.matvec(theta)) - onehot) / n + penalty * theta

    theta = np.zeros((dim + 1, classes))
    previous = theta
    momentum_steps = 0
    for _ in range(ITERATIONS):
        lookahead = theta + (momentum_steps / (momentum_steps + 3)) * (theta - previous)
        direction = gradient(lookahead)
        updated = lookahead - step * direction
        momentum_steps = 0 if float(np.vdot(direction, updated - theta)) > 0 else momentum_steps + 1
        previous, theta = theta, updated
    return Fit(theta[:-1], theta[-1], float(np.linalg.norm(gradient(theta))))


def log_loss(probabilities: Array, y: npt.NDArray[np.int64]) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-12, None))))


def stratified_folds(y: npt.NDArray[np.int64], folds: int, rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
    """Indices of each fold's validation part, every class spread evenly over the folds."""
    parts: list[list[int]] = [[] for _ in range(folds)]
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        for i, index in enumerate(members):
            parts[i % folds].append(int(index))
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


@dataclass(frozen=True)
class CrossValidation:
    l2: float
    accuracy: float
    log_loss: float


def cross_validate(
    x: Array, y: npt.NDArray[np.int64], classes: int, grid: Sequence[float] = L2_GRID, seed: int = SEED
) -> list[CrossValidation]:
    folds = stratified_folds(y, FOLDS, np.random.default_rng(seed))
    results = []
    for l2 in grid:
        correct, losses = 0, []
        for held in folds:
            train = np.setdiff1d(np.arange(len(y)), held)
            fit = fit_logistic_regression(x[train], y[train], classes, l2)
            probabilities = softmax(x[held] @ fit.weights + fit.bias)
            correct += int((probabilities.argmax(axis=1) == y[held]).sum())
            losses.append(log_loss(probabilities, y[held]) * len(held))
        results.append(CrossValidation(l2, correct / len(y), sum(losses) / len(y)))
    return results


def best_l2(results: Sequence[CrossValidation]) -> CrossValidation:
    return min(results, key=lambda result: (result.log_loss, result.l2))


def class_indices(labels: Sequence[ServiceType]) -> npt.NDArray[np.int64]:
    """Labels as indices into ``ServiceType`` (the head's class order is the enum's)."""
    order = list(ServiceType)
    return np.array([order.index(label) for label in labels], dtype=np.int64)


def fit_head(
    x: npt.NDArray[np.floating], labels: Sequence[ServiceType], l2: float, spec: FeatureSpec, words: Sequence[str]
) -> tuple[LinearHead, Fit]:
    """The head on all of ``x`` (``StaticFeatures.matrix``) at one L2 strength, ready to save."""
    fit = fit_logistic_regression(x.astype(np.float64), class_indices(labels), len(ServiceType), l2)
    head = LinearHead(
        tuple(ServiceType), fit.weights.astype(np.float32), fit.bias.astype(np.float32), spec, tuple(words)
    )
    return head, fit
