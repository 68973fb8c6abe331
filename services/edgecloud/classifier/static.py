"""A prompt's features from the static table: sums of table rows, plus word indicators. No matrix product.

``StaticTable`` is the distilled table (``distill.py``) as shipped in ``data/static_table.npz``: float16
rows, the PCA that made them, and the WordPiece vocabulary, so the classifier needs neither the MiniLM
weights nor ``tokenizers`` at run time. ``StaticFeatures`` turns a text into what the head reads:

- pooled blocks of token rows, each L2-normalised (``Pooling``): the mean of all tokens, of the first and
  of the last ``window`` tokens (an instruction at either end of a long paste keeps its weight), or the
  elementwise max; the rows weighted by SIF (``sif``) so frequent tokens count less;
- indicators of the normalised words seen in at least ``MIN_DOCUMENT_FREQUENCY`` training prompts, each
  present word worth ``bow_scale / n ** bow_power`` (n words present): the words the head may weigh one by
  one, diluted by a long passage less than an L2 norm (power 0.5) would dilute them. A CJK ideograph is
  a word of its own; MiniLM's vocabulary lacks most Chinese and Japanese characters (their rows are
  ``[UNK]``), so for those languages these indicators are all the head sees of them;
- with ``prefix_chars``, also an indicator of the first ``prefix_chars`` letters of each longer alphabetic
  word: a crude stemmer for every language at once ("résume", "résumer", "résumé"; "zusammenfassen",
  "Zusammenfassung"; "extrae", "extraer"), where a word seen in one inflection would miss the others.

Which of these, at what settings, was chosen by cross-validation on the training set
(``scripts/train_classifier.py --sweep``; docs/classifier.md). The settings are stored with the head.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgecloud.classifier.wordpiece import WordPiece

Array = npt.NDArray[np.float32]

# model2vec's SIF weighting (distillation post-processing): token frequency estimated by Zipf's law from the
# vocabulary rank (BERT's WordPiece vocabulary is roughly frequency-ordered), weight sif / (sif + p).
ZIPF_FIRST_RANK = 2
# Guards the L2 norm of an all-zero block (a text of [UNK]s only).
NORM_EPS = 1e-12
# The cost of a text is per word, and a CJK ideograph is a word (about 5 characters of English prose make
# one): a text with any non-ASCII character is cut to max_chars / this, so a long Chinese paste costs about
# what a long English one does (benchmarks/classifier.py, worst case).
NON_ASCII_CHAR_COST = 2
# A word is a feature of its own only if it is in at least this many training prompts: rarer ones would
# be fitted to one prompt each.
MIN_DOCUMENT_FREQUENCY = 2
# Marks a word's prefix term apart from a word that is spelt like it.
PREFIX_MARK = "~"


class Pooling(StrEnum):
    MEAN = "mean"
    HEAD = "head"
    TAIL = "tail"
    MAX = "max"


@dataclass(frozen=True)
class FeatureSpec:
    """How a text becomes features; stored with the head so it is always read with the features it was fit on."""

    layer: int  # MiniLM layer the table was distilled from
    dims: int  # PCA dimensions kept
    sif: float  # SIF coefficient; 0: every token counts alike
    pooling: tuple[Pooling, ...]
    window: int  # tokens in the head and tail blocks
    bow_scale: float  # the word-indicator block's weight; 0: none
    bow_power: (
        float  # each present word is bow_scale / (words present) ** bow_power; 0.5: the block's norm is bow_scale
    )
    max_chars: int  # a longer (ASCII) text is cut to its first and last max_chars / 2 characters
    prefix_chars: int = 0  # also an indicator per prefix of this many letters of a longer word; 0: none

    def to_arrays(self) -> dict[str, Any]:
        return {
            "layer": np.int64(self.layer),
            "dims": np.int64(self.dims),
            "sif": np.float64(self.sif),
            "pooling": np.array([p.value for p in self.pooling]),
            "window": np.int64(self.window),
            "bow_scale": np.float64(self.bow_scale),
            "bow_power": np.float64(self.bow_power),
            "max_chars": np.int64(self.max_chars),
            "prefix_chars": np.int64(self.prefix_chars),
        }

    @classmethod
    def from_arrays(cls, data: Any) -> FeatureSpec:
        return cls(
            layer=int(data["layer"]),
            dims=int(data["dims"]),
            sif=float(data["sif"]),
            pooling=tuple(Pooling(str(p)) for p in data["pooling"]),
            window=int(data["window"]),
            bow_scale=float(data["bow_scale"]),
            bow_power=float(data["bow_power"]),
            max_chars=int(data["max_chars"]),
            prefix_chars=int(data["prefix_chars"]) if "prefix_chars" in data else 0,
        )


@dataclass(frozen=True)
class StaticTable:
    """One row per WordPiece token, the PCA that made them, and the tokenizer settings to find the rows."""

    vectors: Array  # (vocabulary, dims)
    layer: int
    pca_mean: Array  # (hidden,)
    pca_components: Array  # (hidden, dims)
    vocab: tuple[str, ...]  # in id order
    unk_token: str
    subword_prefix: str
    max_chars_per_word: int
    model_sha256: str  # of the model.safetensors distilled

    @property
    def dims(self) -> int:
        return int(self.vectors.shape[1])

    def wordpiece(self) -> WordPiece:
        vocab = {token: i for i, token in enumerate(self.vocab)}
        return WordPiece(vocab, self.unk_token, self.subword_prefix, self.max_chars_per_word)

    def save(self, path: Path) -> None:
        """float16 rows (the half precision is ~1e-3 relative, far below what separates the types)."""
        np.savez_compressed(
            path,
            vectors=self.vectors.astype(np.float16),
            layer=np.int64(self.layer),
            pca_mean=self.pca_mean,
            pca_components=self.pca_components,
            vocab=np.frombuffer("\n".join(self.vocab).encode(), dtype=np.uint8),
            unk_token=np.str_(self.unk_token),
            subword_prefix=np.str_(self.subword_prefix),
            max_chars_per_word=np.int64(self.max_chars_per_word),
            model_sha256=np.str_(self.model_sha256),
        )

    @classmethod
    def load(cls, path: Path) -> StaticTable:
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: the classifier's static table is missing; it is shipped in the repository, "
                "or rebuilt with scripts/train_classifier.py --distill (needs scripts/bootstrap's MiniLM)"
            )
        with np.load(path, allow_pickle=False) as data:
            return cls(
                vectors=data["vectors"].astype(np.float32),
                layer=int(data["layer"]),
                pca_mean=data["pca_mean"],
                pca_components=data["pca_components"],
                vocab=tuple(data["vocab"].tobytes().decode().split("\n")),
                unk_token=str(data["unk_token"]),
                subword_prefix=str(data["subword_prefix"]),
                max_chars_per_word=int(data["max_chars_per_word"]),
                model_sha256=str(data["model_sha256"]),
            )


def sif_weights(size: int, sif: float) -> Array:
    if sif == 0:
        return np.ones(size, dtype=np.float32)
    inverse_rank = 1.0 / np.arange(ZIPF_FIRST_RANK, size + ZIPF_FIRST_RANK)
    probability = inverse_rank / inverse_rank.sum()
    return (sif / (sif + probability)).astype(np.float32)


def _normalise(vector: Array) -> Array:
    return vector / max(float(np.sqrt(vector @ vector)), NORM_EPS)


def vocabulary_of(term_lists: Iterable[Iterable[str]]) -> tuple[str, ...]:
    """Terms in at least ``MIN_DOCUMENT_FREQUENCY`` of the texts, sorted: the word features' columns."""
    counts: dict[str, int] = {}
    for terms in term_lists:
        for term in set(terms):
            counts[term] = counts.get(term, 0) + 1
    return tuple(sorted(term for term, count in counts.items() if count >= MIN_DOCUMENT_FREQUENCY))


class StaticFeatures:
    """Text to the head's input. Read-only after construction, so calls from several threads are safe."""

    def __init__(self, table: StaticTable, spec: FeatureSpec, words: Sequence[str] = ()) -> None:
        if (table.layer, table.dims) != (spec.layer, spec.dims):
            raise ValueError(
                f"features want layer {spec.layer} at {spec.dims} dims, the table is layer {table.layer} "
                f"at {table.dims} dims"
            )
        self.table = table
        self.spec = spec
        self.tokenizer = table.wordpiece()
        rows = table.vectors * sif_weights(len(table.vectors), spec.sif)[:, None]
        rows[self.tokenizer.unk_id] = 0.0  # an unknown word says nothing
        self.rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.words = tuple(words) if spec.bow_scale else ()
        self.word_column = {word: i for i, word in enumerate(self.words)}
        self.dense_size = spec.dims * len(spec.pooling)
        self.size = self.dense_size + len(self.words)

    def text_words(self, text: str) -> list[str]:
        """The normalised words of a text, once cut to ``max_chars``."""
        return self.tokenizer.words(self.cut(text))

    def terms(self, words: Sequence[str]) -> set[str]:
        """What the word block indicates: the words, and the prefixes of the longer alphabetic ones."""
        k = self.spec.prefix_chars
        if not k:
            return set(words)
        return {*words, *(PREFIX_MARK + word[:k] for word in words if len(word) > k and word.isalpha())}

    def text_terms(self, text: str) -> set[str]:
        return self.terms(self.text_words(text))

    def cut(self, text: str) -> str:
        """The first and last characters of a long text, fewer if it is not ASCII (``NON_ASCII_CHAR_COST``)."""
        limit = self.spec.max_chars if text.isascii() else self.spec.max_chars // NON_ASCII_CHAR_COST
        return text if len(text) <= limit else text[: limit // 2] + " " + text[-(limit // 2) :]

    def encode(self, text: str) -> tuple[Array, list[int], float]:
        """Dense blocks, the word columns present and the value of each (the word block is sparse)."""
        words = self.text_words(text)
        ids = self.tokenizer.ids_of(words)
        rows = self.rows.take(ids, axis=0)
        window = self.spec.window
        blocks = []
        for pooling in self.spec.pooling:
            if not ids:
                blocks.append(np.zeros(self.spec.dims, dtype=np.float32))
            elif pooling is Pooling.MEAN:
                blocks.append(_normalise(rows.sum(axis=0)))
            elif pooling is Pooling.HEAD:
                blocks.append(_normalise(rows[:window].sum(axis=0)))
            elif pooling is Pooling.TAIL:
                blocks.append(_normalise(rows[-window:].sum(axis=0)))
            else:
                blocks.append(_normalise(rows.max(axis=0)))
        dense = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        if not self.words:
            return dense, [], 0.0
        columns = [c for c in map(self.word_column.get, self.terms(words)) if c is not None]
        value = self.spec.bow_scale / len(columns) ** self.spec.bow_power if columns else 0.0
        return dense, columns, float(value)

    def matrix(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Features of many texts as one dense matrix, (texts, size): training and evaluation."""
        x = np.zeros((len(texts), self.size))
        for i, text in enumerate(texts):
            dense, columns, value = self.encode(text)
            x[i, : self.dense_size] = dense
            x[i, [self.dense_size + c for c in columns]] = value
        return x
