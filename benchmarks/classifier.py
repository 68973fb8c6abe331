"""Prompt classifier: held-out accuracy, per-class table, and the latency of ``classify`` as the gateway calls it.

Every prompt of ``prompts_test.jsonl`` (never used in training) is classified one call at a time from one
thread, as the gateway does; that gives both the predictions and the latency samples (``PASSES`` passes,
after a warm-up). Baselines, side by side, on the full-depth sentence embedding (layer 6, what
sentence-transformers returns): nearest centroid, logistic regression, and logistic regression on the
sentence embedding plus layer 3 (the shipped head reads layer 3 alone and stops the forward pass there).
Then the encoder's latency against tokens kept, early exit and full depth, to show what the 32-token
budget and the early exit buy.

BLAS threads: set ``OPENBLAS_NUM_THREADS`` before the run to change them; the default here is 1, which is
what the gateway should run with (docs/classifier.md):

    .venv/bin/python benchmarks/classifier.py [--out FILE]        # ~1 minute
    OPENBLAS_NUM_THREADS=2 .venv/bin/python benchmarks/classifier.py --out /tmp/classifier-2threads.json
"""

from __future__ import annotations

import os

# Must precede the first numpy import (OpenBLAS reads it once, at load).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from edgecloud.classifier import training
from edgecloud.classifier.encoder import MiniLMEncoder, Truncation
from edgecloud.classifier.model import TEST_PATH, TRAIN_PATH, WEIGHTS_PATH, PromptClassifier
from edgecloud.core.vocabulary import ServiceType

PASSES = 3
WARMUP_CALLS = 10
ACCURACY_TARGET = 0.90
P99_TARGET_MS = 15.0
# Token counts for the latency curve; above MAX_TOKENS only the reference (head, 256) encoder reaches them.
SWEEP_TOKENS = (8, 16, 24, 32, 64, 128, 256)
SWEEP_CALLS = 30
# Below this confidence a prediction is reported as "low confidence" (a caller could fall back to chat).
LOW_CONFIDENCE = 0.5
SNIPPET_CHARS = 70


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000

    return {"p50_ms": at(50), "p90_ms": at(90), "p99_ms": at(99), "max_ms": ordered[-1] * 1000, "n": len(ordered)}


def per_class(truth: list[ServiceType], predicted: list[ServiceType]) -> dict[str, dict[str, object]]:
    table: dict[str, dict[str, object]] = {}
    for cls in ServiceType:
        row = [p for t, p in zip(truth, predicted, strict=True) if t is cls]
        predicted_as = sum(1 for p in predicted if p is cls)
        correct = sum(1 for p in row if p is cls)
        table[cls.value] = {
            "n": len(row),
            "recall": correct / len(row),
            "precision": correct / predicted_as if predicted_as else 0.0,
            "predicted": {other.value: sum(1 for p in row if p is other) for other in ServiceType},
        }
    return table


def print_table(table: dict[str, dict[str, object]]) -> None:
    short = {cls.value: cls.value[:6] for cls in ServiceType}
    print(f"{'true / predicted':24}" + "".join(f"{short[c.value]:>8}" for c in ServiceType) + "  recall  precision")
    for name, row in table.items():
        counts = row["predicted"]
        assert isinstance(counts, dict)
        cells = "".join(f"{counts[c.value]:>8}" for c in ServiceType)
        print(f"{name:24}{cells}  {row['recall']:.3f}   {row['precision']:.3f}")


def latency_sweep(classifier: PromptClassifier) -> dict[str, dict[str, dict[str, float]]]:
    """Median latency of the encoder at n tokens kept, with the shipped layers and at full depth.

    Above the shipped budget the 256-token reference encoder (head truncation) is timed: what it would cost.
    """
    reference = MiniLMEncoder.load(max_tokens=max(SWEEP_TOKENS), truncation=Truncation.HEAD)
    filler = " ".join(["word"] * max(SWEEP_TOKENS) * 2)
    variants = {"shipped_layers": classifier.head.layers, "full_depth": (classifier.encoder.sentence_layer,)}
    sweep: dict[str, dict[str, dict[str, float]]] = {name: {} for name in variants}
    for tokens in SWEEP_TOKENS:
        encoder = classifier.encoder if tokens <= classifier.encoder.max_tokens else reference
        text = " ".join(filler.split()[: tokens - 2])
        assert len(encoder.token_ids(text)) == tokens
        for name, layers in variants.items():
            samples = []
            for _ in range(SWEEP_CALLS):
                start = time.perf_counter()
                encoder.pooled(text, layers)
                samples.append(time.perf_counter() - start)
            sweep[name][str(tokens)] = percentiles_ms(samples)
        print(
            f"  {tokens:>4} tokens: layers {classifier.head.layers} p50 "
            f"{sweep['shipped_layers'][str(tokens)]['p50_ms']:.1f} ms, full depth "
            f"{sweep['full_depth'][str(tokens)]['p50_ms']:.1f} ms"
        )
    return sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/classifier.json"))
    args = parser.parse_args()

    start = time.perf_counter()
    classifier = PromptClassifier.load()
    load_s = time.perf_counter() - start
    test = training.load_prompts(TEST_PATH)
    train = training.load_prompts(TRAIN_PATH)
    truth = [p.service_type for p in test]
    tokens = [len(classifier.encoder.tokenizer.encode(p.text).ids) for p in test]
    print(
        f"loaded in {load_s:.2f} s; {len(test)} held-out prompts, {len(train)} training prompts; "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )

    for prompt in train[:WARMUP_CALLS]:
        classifier.classify(prompt.text)
    latencies: list[float] = []
    results = []
    for _ in range(PASSES):
        results = [classifier.classify(p.text) for p in test]
        latencies.extend(r.latency_s for r in results)
    predicted = [r.service_type for r in results]
    confidences = np.array([r.confidence for r in results])
    correct = np.array([p is t for p, t in zip(predicted, truth, strict=True)])
    accuracy = float(correct.mean())
    latency = percentiles_ms(latencies)
    table = per_class(truth, predicted)

    # Baselines on the full-depth sentence embedding (layer 6) and on layers 6 + 3, from one forward pass.
    encoder, sentence, middle = classifier.encoder, classifier.encoder.sentence_layer, 3
    pooled_train = encoder.pooled_batch([p.text for p in train], (sentence, middle)).astype(np.float64)
    pooled_test = encoder.pooled_batch([p.text for p in test], (sentence, middle)).astype(np.float64)
    y_train, y_test = training.class_indices([p.service_type for p in train]), training.class_indices(truth)
    centroids = np.stack([pooled_train[y_train == k, 0].mean(axis=0) for k in range(len(ServiceType))])
    with np.load(WEIGHTS_PATH) as shipped:
        l2 = float(shipped["l2"])

    def logistic_accuracy(x_train: np.ndarray, x_test: np.ndarray) -> float:
        fit = training.fit_logistic_regression(x_train, y_train, len(ServiceType), l2)
        return float(((x_test @ fit.weights + fit.bias).argmax(axis=1) == y_test).mean())

    baselines = {
        "nearest_centroid_sentence_embedding": float(
            ((pooled_test[:, 0] @ centroids.T).argmax(axis=1) == y_test).mean()
        ),
        "logistic_regression_sentence_embedding": logistic_accuracy(pooled_train[:, 0], pooled_test[:, 0]),
        "logistic_regression_layers_6_and_3": logistic_accuracy(
            pooled_train.reshape(len(train), -1), pooled_test.reshape(len(test), -1)
        ),
    }

    print()
    print_table(table)
    print(f"\naccuracy {accuracy:.3f} ({int(correct.sum())}/{len(test)}), target >= {ACCURACY_TARGET}")
    print("baselines (same held-out set): " + "; ".join(f"{name} {value:.3f}" for name, value in baselines.items()))
    low = confidences < LOW_CONFIDENCE
    low_accuracy = float(correct[low].mean()) if low.any() else float("nan")
    print(
        f"confidence: mean {confidences[correct].mean():.3f} when right, "
        f"{confidences[~correct].mean() if (~correct).any() else float('nan'):.3f} when wrong; "
        f"{int(low.sum())} below {LOW_CONFIDENCE} (accuracy among them {low_accuracy:.3f})"
    )
    print(
        f"latency over {latency['n']} calls: p50 {latency['p50_ms']:.2f} ms, p90 {latency['p90_ms']:.2f} ms, "
        f"p99 {latency['p99_ms']:.2f} ms, max {latency['max_ms']:.2f} ms; target p99 < {P99_TARGET_MS} ms"
    )
    print(
        f"held-out prompt tokens: median {int(np.median(tokens))}, max {max(tokens)}, "
        f"{sum(t > classifier.encoder.max_tokens for t in tokens)} longer than {classifier.encoder.max_tokens}"
    )
    errors = [
        {
            "id": p.id,
            "true": p.service_type.value,
            "predicted": r.service_type.value,
            "confidence": round(r.confidence, 3),
            "text": p.text[:SNIPPET_CHARS],
        }
        for p, r in zip(test, results, strict=True)
        if r.service_type is not p.service_type
    ]
    print("\nmisclassified:")
    for error in errors:
        print(f"  {error['id']:32} -> {error['predicted']:22} {error['confidence']:.2f}  {error['text']!r}")
    print(f"\nencoder latency by tokens kept (p50 of {SWEEP_CALLS} calls):")
    sweep = latency_sweep(classifier)

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "openblas_num_threads": os.environ["OPENBLAS_NUM_THREADS"],
        },
        "model": {
            "max_tokens": classifier.encoder.max_tokens,
            "truncation": classifier.encoder.truncation.value,
            "layers": list(classifier.head.layers),
            "l2": l2,
            "load_s": load_s,
        },
        "accuracy": accuracy,
        "accuracy_target": ACCURACY_TARGET,
        "per_class": table,
        "baselines": baselines,
        "confidence": {
            "mean_correct": float(confidences[correct].mean()),
            "mean_wrong": float(confidences[~correct].mean()) if (~correct).any() else None,
            f"below_{LOW_CONFIDENCE}": int(low.sum()),
        },
        "latency": {**latency, "passes": PASSES, "p99_target_ms": P99_TARGET_MS},
        "latency_by_tokens": sweep,
        "test_tokens": {"median": int(np.median(tokens)), "max": max(tokens)},
        "misclassified": errors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
