"""Prompt classifier candidates side by side: accuracy on both held-out sets, latency of one call, load, size.

Candidates (docs/classifier.md):

- ``minilm_l3``: the numpy MiniLM, layer 3 mean-pooled over 32 head + tail tokens, logistic regression;
  what the gateway ran before. Its head is refit here on today's training set (at the L2 it shipped with).
- ``static``: the shipped classifier, ``PromptClassifier.load()``: the distilled static table plus word
  features (``data/static_table.npz``, ``data/classifier.npz``).
- ``static_no_words``: the same table without the word features (head refit here at the shipped L2): what
  the word block adds.
- ``static_cached``: the shipped classifier behind an LRU cache keyed by the prompt text; its first pass
  misses, its later passes hit (reported apart: a cache helps only repeated prompts).

Every held-out prompt (``prompts_test.jsonl``, ``prompts_heldout2.jsonl``, ``prompts_heldout3.jsonl``; never
used in training or for a choice) is classified one call at a time from one thread, as the gateway does:
``PASSES`` passes after a warm-up, so the predictions and the latency samples come from the same calls.
Then the worst case (the longest text the classifier reads, ASCII and not) and the cost of the gateway's
``asyncio.to_thread`` hop.

BLAS threads: set ``OPENBLAS_NUM_THREADS`` before the run to change them; the default here is 1, which is
what the gateway should run with (docs/classifier.md):

    .venv/bin/python benchmarks/classifier.py [--out FILE]        # ~2 minutes
"""

from __future__ import annotations

import os

# Must precede the first numpy import (OpenBLAS reads it once, at load).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import dataclasses
import json
import platform
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgecloud.classifier import training
from edgecloud.classifier.encoder import MiniLMEncoder, Truncation, default_model_dir
from edgecloud.classifier.model import (
    HELD_OUT_PATHS,
    TABLE_PATH,
    TRAIN_PATH,
    WEIGHTS_PATH,
    Classification,
    PromptClassifier,
    softmax,
)
from edgecloud.classifier.static import StaticFeatures
from edgecloud.core.vocabulary import ServiceType

PASSES = 3
WARMUP_CALLS = 20
ACCURACY_TARGET = 0.97
P99_TARGET_MS = 0.5
# The MiniLM baseline as it shipped (its docs/classifier.md): layer 3, 32 tokens head + tail, L2 1e-5.
BASELINE_LAYER, BASELINE_TOKENS, BASELINE_L2 = 3, 32, 1e-5
# Entries of the LRU cache candidate: more than the held-out prompts, so every repeat hits.
CACHE_ENTRIES = 4096
# Worst-case texts: a megabyte, cut by the classifier to FeatureSpec.max_chars.
WORST_CASE_CHARS = 1_000_000
WORST_CASE_CALLS = 200
THREAD_HOP_CALLS = 2000
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
            "recall": correct / len(row) if row else 0.0,
            "precision": correct / predicted_as if predicted_as else 0.0,
            "predicted": {other.value: sum(1 for p in row if p is other) for other in ServiceType},
        }
    return table


def print_table(table: dict[str, dict[str, object]]) -> None:
    print(f"{'true / predicted':24}" + "".join(f"{c.value[:6]:>8}" for c in ServiceType) + "  recall  precision")
    for name, row in table.items():
        counts = row["predicted"]
        assert isinstance(counts, dict)
        cells = "".join(f"{counts[c.value]:>8}" for c in ServiceType)
        print(f"{name:24}{cells}  {row['recall']:.3f}   {row['precision']:.3f}")


class MiniLMClassifier:
    """The baseline: MiniLM layer 3 over 32 head + tail tokens and a logistic-regression head."""

    def __init__(self, encoder: MiniLMEncoder, weights: np.ndarray, bias: np.ndarray) -> None:
        self.encoder, self.weights, self.bias = encoder, weights.astype(np.float32), bias.astype(np.float32)

    def classify(self, text: str) -> Classification:
        start = time.perf_counter()
        probabilities = softmax(self.encoder.pooled(text, (BASELINE_LAYER,)).reshape(-1) @ self.weights + self.bias)
        best = int(probabilities.argmax())
        return Classification(list(ServiceType)[best], float(probabilities[best]), time.perf_counter() - start)


class CachedClassifier:
    """An LRU cache keyed by the prompt text in front of a classifier (single-threaded: the benchmark's)."""

    def __init__(self, inner: PromptClassifier, entries: int) -> None:
        self.inner, self.entries = inner, entries
        self.cache: OrderedDict[str, Classification] = OrderedDict()

    def classify(self, text: str) -> Classification:
        start = time.perf_counter()
        hit = self.cache.get(text)
        if hit is not None:
            self.cache.move_to_end(text)
            return dataclasses.replace(hit, latency_s=time.perf_counter() - start)
        result = self.inner.classify(text)
        self.cache[text] = result
        if len(self.cache) > self.entries:
            self.cache.popitem(last=False)
        return result


def evaluate(
    name: str,
    classify: Callable[[str], Classification],
    sets: dict[str, list[training.LabelledPrompt]],
    warmup: list[str],
    fresh_each_pass: Callable[[], None] | None = None,
) -> dict[str, object]:
    """Accuracy per held-out set and latency per pass (pass 1 apart: a cache misses only then)."""
    for text in warmup:
        classify(text)
    result: dict[str, object] = {}
    passes: list[list[float]] = []
    for index in range(PASSES):
        samples: list[float] = []
        for set_name, prompts in sets.items():
            outputs = [classify(p.text) for p in prompts]
            samples.extend(o.latency_s for o in outputs)
            if index == 0:
                truth, predicted = [p.service_type for p in prompts], [o.service_type for o in outputs]
                correct = [t is p for t, p in zip(truth, predicted, strict=True)]
                result[set_name] = {
                    "accuracy": float(np.mean(correct)),
                    "correct": int(sum(correct)),
                    "n": len(prompts),
                    "per_class": per_class(truth, predicted),
                    "misclassified": [
                        {
                            "id": p.id,
                            "true": p.service_type.value,
                            "predicted": o.service_type.value,
                            "confidence": round(o.confidence, 3),
                            "text": p.text[:SNIPPET_CHARS],
                        }
                        for p, o in zip(prompts, outputs, strict=True)
                        if o.service_type is not p.service_type
                    ],
                    "mean_confidence_right": float(
                        np.mean([o.confidence for o, c in zip(outputs, correct, strict=True) if c])
                    ),
                }
        passes.append(samples)
    result["latency"] = percentiles_ms([s for samples in passes for s in samples])
    result["latency_first_pass"] = percentiles_ms(passes[0])
    result["latency_later_passes"] = percentiles_ms([s for samples in passes[1:] for s in samples])
    summary = ", ".join(f"{k} {result[k]['accuracy']:.3f}" for k in sets)  # type: ignore[index]
    latency = result["latency"]
    assert isinstance(latency, dict)
    print(
        f"{name:18} {summary}; latency p50 {latency['p50_ms']:.3f} p90 {latency['p90_ms']:.3f} "
        f"p99 {latency['p99_ms']:.3f} max {latency['max_ms']:.3f} ms",
        flush=True,
    )
    return result


def worst_case(classifier: PromptClassifier) -> dict[str, dict[str, float]]:
    """A megabyte of English prose and of mixed-script text: the classifier reads ``max_chars`` of it."""
    texts = {
        "ascii": ("The quarterly report lists revenue, costs and staff numbers for each region. " * 20_000)[
            :WORST_CASE_CHARS
        ],
        "non_ascii": ("Le café coûte 3,50 € à Zürich; 请总结这段文字。 こんにちは、要約してください。 " * 30_000)[
            :WORST_CASE_CHARS
        ],
    }
    out = {}
    for name, text in texts.items():
        samples = [classifier.classify(text).latency_s for _ in range(WORST_CASE_CALLS)]
        out[name] = percentiles_ms(samples)
        print(f"worst case {name:10} p50 {out[name]['p50_ms']:.3f} p99 {out[name]['p99_ms']:.3f} ms", flush=True)
    return out


def thread_hop(classifier: PromptClassifier, text: str) -> dict[str, dict[str, float]]:
    """``await asyncio.to_thread(classify, text)`` against ``classify(text)`` inline, timed in the event loop."""

    async def run() -> dict[str, dict[str, float]]:
        inline, hopped = [], []
        for _ in range(THREAD_HOP_CALLS):
            start = time.perf_counter()
            classifier.classify(text)
            inline.append(time.perf_counter() - start)
            start = time.perf_counter()
            await asyncio.to_thread(classifier.classify, text)
            hopped.append(time.perf_counter() - start)
        return {"inline": percentiles_ms(inline), "to_thread": percentiles_ms(hopped)}

    result = asyncio.run(run())
    print(
        f"thread hop: inline p50 {result['inline']['p50_ms']:.3f} ms, to_thread p50 "
        f"{result['to_thread']['p50_ms']:.3f} ms (p99 {result['inline']['p99_ms']:.3f} / "
        f"{result['to_thread']['p99_ms']:.3f})",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/classifier.json"))
    args = parser.parse_args()

    train = training.load_prompts(TRAIN_PATH)
    sets = {name: training.load_prompts(path) for name, path in HELD_OUT_PATHS.items()}
    warmup = [p.text for p in train[:WARMUP_CALLS]]
    y_train = training.class_indices([p.service_type for p in train])
    print(
        f"{len(train)} training prompts; held out: "
        + ", ".join(f"{k} {len(v)}" for k, v in sets.items())
        + f"; OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    candidates: dict[str, dict[str, object]] = {}

    start = time.perf_counter()
    shipped = PromptClassifier.load()
    load_s = time.perf_counter() - start
    with np.load(WEIGHTS_PATH) as data:
        shipped_l2 = float(data["l2"])
    size = {"table": TABLE_PATH.stat().st_size, "head": WEIGHTS_PATH.stat().st_size}
    candidates["static"] = {
        "load_s": load_s,
        "artefact_bytes": sum(size.values()),
        "spec": {k: str(v) for k, v in dataclasses.asdict(shipped.head.spec).items()},
        "words": len(shipped.head.words),
        "l2": shipped_l2,
        **evaluate("static", shipped.classify, sets, warmup),
    }

    cached = CachedClassifier(shipped, CACHE_ENTRIES)
    candidates["static_cached"] = {
        "load_s": load_s,
        "artefact_bytes": sum(size.values()),
        **evaluate("static_cached", cached.classify, sets, []),
    }

    spec = dataclasses.replace(shipped.head.spec, bow_scale=0.0)
    plain = StaticFeatures(shipped.features.table, spec)
    head, _ = training.fit_head(
        plain.matrix([p.text for p in train]), [p.service_type for p in train], shipped_l2, spec, ()
    )
    candidates["static_no_words"] = {
        "artefact_bytes": size["table"],
        **evaluate("static_no_words", PromptClassifier(plain, head).classify, sets, warmup),
    }

    model_dir = default_model_dir()
    start = time.perf_counter()
    encoder = MiniLMEncoder.load(model_dir, BASELINE_TOKENS, Truncation.HEAD_TAIL)
    minilm_load_s = time.perf_counter() - start
    x = encoder.pooled_batch([p.text for p in train], (BASELINE_LAYER,)).reshape(len(train), -1).astype(np.float64)
    fit = training.fit_logistic_regression(x, y_train, len(ServiceType), BASELINE_L2)
    candidates["minilm_l3"] = {
        "load_s": minilm_load_s,
        "artefact_bytes": (model_dir / "model.safetensors").stat().st_size,
        "l2": BASELINE_L2,
        **evaluate("minilm_l3", MiniLMClassifier(encoder, fit.weights, fit.bias).classify, sets, warmup),
    }

    print()
    for set_name in sets:
        print(f"shipped (static) on {set_name}:")
        report = candidates["static"][set_name]
        assert isinstance(report, dict)
        print_table(report["per_class"])
        for error in report["misclassified"]:
            print(f"  {error['id']:34} -> {error['predicted']:22} {error['confidence']:.2f}  {error['text']!r}")
        print()

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "openblas_num_threads": os.environ["OPENBLAS_NUM_THREADS"],
            "load_average_at_end": os.getloadavg(),
        },
        "train_prompts": len(train),
        "held_out": {name: len(prompts) for name, prompts in sets.items()},
        "accuracy_target": ACCURACY_TARGET,
        "p99_target_ms": P99_TARGET_MS,
        "passes": PASSES,
        "candidates": candidates,
        "worst_case": worst_case(shipped),
        "thread_hop": thread_hop(shipped, sets["test"][0].text),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
