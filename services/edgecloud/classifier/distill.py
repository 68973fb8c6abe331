"""A static embedding table distilled from MiniLM, model2vec-style: one vector per vocabulary token.

Each of the 30,522 WordPiece tokens goes through the numpy encoder alone, as ``[CLS] token [SEP]``, and
its hidden state at its own position after layer ``layer`` becomes its row (Tulkens & van Dongen,
"Model2Vec", 2024, do the same with the output layer). PCA then keeps the directions of most variance,
so the table is small enough to ship (float16, ``data/README.md``). The pass is deterministic: the same
model files give the same table (to float rounding, which depends on the BLAS); ``tests/test_classifier.py``
recomputes rows of the shipped table and compares.

At request time a prompt's feature is then a sum of table rows (``static.py``): no matrix product at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edgecloud.classifier.encoder import MiniLMEncoder

Array = npt.NDArray[np.float32]

# Tokens per forward pass (each is 3 positions long): ~10 MB of activations, the weights stay in cache.
DISTILL_BATCH = 1024


def token_states(encoder: MiniLMEncoder, layers: Sequence[int], ids: Sequence[int] | None = None) -> Array:
    """Hidden state of each token alone (``[CLS] token [SEP]``, its own position): (layers, tokens, hidden)."""
    vocabulary = np.arange(encoder.word_emb.shape[0]) if ids is None else np.asarray(ids)
    chunks = []
    for start in range(0, len(vocabulary), DISTILL_BATCH):
        batch = vocabulary[start : start + DISTILL_BATCH]
        rows = np.stack(
            [np.full(len(batch), encoder.cls_id), batch, np.full(len(batch), encoder.sep_id)], axis=1
        ).astype(np.int64)
        chunks.append(np.stack([state[:, 1] for state in encoder.hidden_states(rows, layers)]))
    return np.concatenate(chunks, axis=1)


def principal_components(vectors: npt.NDArray[np.floating], dims: int) -> tuple[Array, Array]:
    """The mean and the first ``dims`` principal directions (hidden, dims) of the rows, with fixed signs.

    Each direction's sign is chosen so that its largest component is positive: SVD leaves it arbitrary,
    and a reproducible table needs one.
    """
    data = vectors.astype(np.float64)
    mean = data.mean(axis=0)
    _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
    components = vt[:dims].T
    signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(dims)])
    return mean.astype(np.float32), (components * signs).astype(np.float32)


def project(vectors: npt.NDArray[np.floating], mean: Array, components: Array) -> Array:
    return ((vectors - mean) @ components).astype(np.float32)
