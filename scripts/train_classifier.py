#!/usr/bin/env python3
"""Train the prompt classifier's head and write services/edgecloud/classifier/data/classifier.npz.

Reads only prompts_train.jsonl (the held-out prompts_test.jsonl is for benchmarks/classifier.py and the
tests). Encodes every training prompt with the numpy MiniLM (MAX_TOKENS, head and tail), picks the L2
strength by seeded 5-fold cross-validation (log-loss), fits on all of it and saves weights with their
provenance (training file hash, L2, cross-validation scores). Deterministic: the same file gives the same
weights (to float rounding, which depends on the BLAS). About a minute on one core.

    .venv/bin/python scripts/train_classifier.py [--out FILE] [--layers 6 3] [--layer-sweep]

--layers picks other pooled layers than FEATURE_LAYERS (e.g. ``6 3``: full depth, sentence embedding plus
layer 3). --layer-sweep prints, instead, the cross-validation of each layer alone and of the sentence
embedding paired with each other layer (how FEATURE_LAYERS was chosen; L2 1e-5 and 1e-4 only, ~3 minutes)
and writes nothing.
"""

from __future__ import annotations

import os

# One BLAS thread: the shipped weights were made so, and two threads on two shared cores are slower here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import time
from pathlib import Path

import numpy as np

from edgecloud.classifier import training
from edgecloud.classifier.encoder import MiniLMEncoder
from edgecloud.classifier.model import FEATURE_LAYERS, MAX_TOKENS, TRAIN_PATH, TRUNCATION, WEIGHTS_PATH, features
from edgecloud.core.vocabulary import ServiceType

SWEEP_L2 = (1e-5, 1e-4)


def layer_sweep(encoder: MiniLMEncoder, texts: list[str], y: np.ndarray) -> None:
    last = encoder.sentence_layer
    every = tuple(range(last + 1))
    pooled = encoder.pooled_batch(texts, every)  # one forward pass for all layers
    print("layers   " + "  ".join(f"l2={l2:g}: accuracy / log-loss" for l2 in SWEEP_L2))
    for layers in [*((layer,) for layer in every), *((last, layer) for layer in range(last))]:
        x = pooled[:, list(layers)].reshape(len(texts), -1).astype(np.float64)
        results = training.cross_validate(x, y, len(ServiceType), grid=SWEEP_L2)
        print(f"{layers!s:8} " + "  ".join(f"{r.accuracy:.3f} / {r.log_loss:.3f}" for r in results), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--layers", type=int, nargs="+", default=list(FEATURE_LAYERS))
    parser.add_argument("--layer-sweep", action="store_true")
    args = parser.parse_args()
    layers = tuple(args.layers)

    prompts = training.load_prompts(TRAIN_PATH)
    texts, labels = [p.text for p in prompts], [p.service_type for p in prompts]
    y = training.class_indices(labels)
    encoder = MiniLMEncoder.load(max_tokens=MAX_TOKENS, truncation=TRUNCATION)
    print(f"{len(prompts)} training prompts, {MAX_TOKENS} tokens ({TRUNCATION}), layers {layers}")
    if args.layer_sweep:
        layer_sweep(encoder, texts, y)
        return

    start = time.perf_counter()
    x = features(encoder, texts, layers).astype(np.float64)
    print(f"features {x.shape} in {time.perf_counter() - start:.1f} s")
    results = training.cross_validate(x, y, len(ServiceType))
    for result in results:
        print(f"  l2={result.l2:<8g} cv accuracy {result.accuracy:.3f}  cv log-loss {result.log_loss:.3f}")
    best = training.best_l2(results)
    head, fit = training.fit_head(x, labels, best.l2, MAX_TOKENS, TRUNCATION, layers)
    head.save(
        args.out,
        l2=best.l2,
        cv_accuracy=best.accuracy,
        cv_log_loss=best.log_loss,
        cv_folds=training.FOLDS,
        seed=training.SEED,
        iterations=training.ITERATIONS,
        gradient_norm=fit.gradient_norm,
        train_sha256=training.file_sha256(TRAIN_PATH),
        train_prompts=len(prompts),
    )
    train_accuracy = float((head.probabilities(x.astype(np.float32)).argmax(axis=1) == y).mean())
    print(
        f"chose l2={best.l2:g} (cv accuracy {best.accuracy:.3f}, log-loss {best.log_loss:.3f}); "
        f"final gradient norm {fit.gradient_norm:.1e}; training accuracy {train_accuracy:.3f}"
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
