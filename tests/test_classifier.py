"""The prompt classifier: the numpy MiniLM against sentence-transformers, the fast tokenizer against
``tokenizers``, the shipped static table and head against what the training script makes of the shipped
data, accuracy on both held-out sets, and edge cases (empty, very long, missing artefacts). Real model,
real data."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from edgecloud.classifier import Classification, PromptClassifier, distill, prompt_text, training
from edgecloud.classifier.encoder import MiniLMEncoder, Truncation, default_model_dir, gelu
from edgecloud.classifier.model import (
    EMPTY_CONFIDENCE,
    HELD_OUT_PATHS,
    TABLE_PATH,
    TRAIN_PATH,
    WEIGHTS_PATH,
    LinearHead,
)
from edgecloud.classifier.static import StaticFeatures, StaticTable, vocabulary_of
from edgecloud.classifier.wordpiece import WordPiece
from edgecloud.core.protocol import ChatCompletionRequest, CompletionRequest
from edgecloud.core.vocabulary import ServiceType

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"
MIN_COSINE = 0.9999
# Floors a little under what the shipped head measured (test 0.971, heldout2 0.937, heldout3 0.764;
# docs/classifier.md), so a regression fails. Issue 14's target, 0.97 on the held-out sets, is reached on the
# first only (docs/classifier.md says why).
ACCURACY_FLOOR = {"test": 0.96, "heldout2": 0.92, "heldout3": 0.75}
MIN_HELD_OUT = {"test": 200, "heldout2": 150, "heldout3": 140}
# The 32-token head + tail budget of the MiniLM encoder (the baseline in benchmarks/classifier.py).
MINILM_TOKENS = 32
# Table rows recomputed from MiniLM: spread over the vocabulary (specials, characters, words, pieces).
TABLE_SAMPLE = (0, 100, 101, 999, 1037, 1996, 2015, 7592, 12345, 20000, 30521)
# float16 rows: ~1e-3 relative (3 significant digits), on components of magnitude ~1.
TABLE_ATOL = 1e-2


@pytest.fixture(scope="module")
def classifier() -> PromptClassifier:
    return PromptClassifier.load()


@pytest.fixture(scope="module", params=list(HELD_OUT_PATHS))
def held_out(request: pytest.FixtureRequest) -> tuple[str, list[training.LabelledPrompt]]:
    return request.param, training.load_prompts(HELD_OUT_PATHS[request.param])


def labelled_texts() -> list[str]:
    return [p.text for path in (TRAIN_PATH, *HELD_OUT_PATHS.values()) for p in training.load_prompts(path)]


# --- the encoder and the tokenizer ---------------------------------------------------------------


def test_encoder_matches_sentence_transformers() -> None:
    reference = json.loads(REFERENCE.read_text())
    encoder = MiniLMEncoder.load()  # max_seq_length from sentence_bert_config.json, not tokenizer.json's 128
    assert encoder.max_tokens == reference["max_seq_length"]
    texts = [item["text"] for item in reference["items"]]
    expected = np.array([item["embedding"] for item in reference["items"]])
    assert any(item["tokens"] == encoder.max_tokens for item in reference["items"]), "a truncated text is covered"
    for item, embedding in zip(reference["items"], expected, strict=True):
        assert len(encoder.token_ids(item["text"])) == item["tokens"]
        ours = encoder.encode(item["text"])
        assert float(ours @ embedding / np.linalg.norm(embedding)) > MIN_COSINE, item["text"][:40]
    batched = encoder.encode_batch(texts)  # padded, with the attention mask
    cosines = np.sum(batched * expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() > MIN_COSINE


def test_gelu_is_the_exact_erf_form() -> None:
    x = np.linspace(-8, 8, 4001, dtype=np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    assert np.abs(gelu(x.copy()) - exact).max() < 1e-6


def test_head_tail_truncation_keeps_both_ends() -> None:
    encoder = MiniLMEncoder.load(max_tokens=MINILM_TOKENS, truncation=Truncation.HEAD_TAIL)
    text = "alpha " + "filler " * 100_000 + "omega"  # ~700 kB: cut to characters first, then to tokens
    ids = encoder.token_ids(text)
    words = encoder.tokenizer.decode(ids).split()
    assert len(ids) == MINILM_TOKENS
    assert (ids[0], ids[-1]) == (encoder.cls_id, encoder.sep_id)
    assert words[0] == "alpha" and words[-1] == "omega"


def test_wordpiece_gives_the_ids_of_tokenizers() -> None:
    """On every labelled prompt, the reference texts and characters the normaliser treats specially."""
    path = default_model_dir() / "tokenizer.json"
    reference, ours = Tokenizer.from_file(str(path)), WordPiece.from_file(path)
    reference.no_truncation()
    reference.no_padding()
    special = [
        "a\x0bb\x1cc\u200bd\ufffde\x00f",  # control, format and replacement characters are dropped
        "İstanbul ǅ ﬁ Ⅻ über naïve café",  # accents stripped after NFD, lower case
        "emoji 😀👍🏽 ok, \U0001d518\U0001d52b \U00010100 and 𠀀𠀁",  # outside the BMP: kept, split off, CJK ext. B
        "tab\tnew\nline\r\n\u3000ideographic space\xa0nbsp",
        "x" * 150 + " superlongwordthatisnotinthevocabulary",  # over 100 characters: one [UNK]
        "请总结这段文字。この文章を要約してください。이 글을 요약해 주세요.",
    ]
    texts = labelled_texts() + [item["text"] for item in json.loads(REFERENCE.read_text())["items"]] + special
    differ = [t[:40] for t in texts if reference.encode(t, add_special_tokens=False).ids != ours.ids(t)]
    assert not differ


# --- the static table ----------------------------------------------------------------------------


def test_static_table_is_distilled_from_the_installed_minilm(classifier: PromptClassifier) -> None:
    """Rows of the shipped table, recomputed: each token alone through MiniLM, projected by the stored PCA."""
    table = classifier.features.table
    model_dir = default_model_dir()
    assert table.model_sha256 == training.file_sha256(model_dir / "model.safetensors")
    vocab = WordPiece.from_file(model_dir / "tokenizer.json").vocab
    assert len(vocab) == len(table.vocab) and all(vocab[token] == i for i, token in enumerate(table.vocab))
    states = distill.token_states(MiniLMEncoder.load(model_dir), (table.layer,), ids=TABLE_SAMPLE)[0]
    recomputed = distill.project(states, table.pca_mean, table.pca_components)
    np.testing.assert_allclose(table.vectors[list(TABLE_SAMPLE)], recomputed, atol=TABLE_ATOL)


def test_missing_artefacts_fail_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="static table is missing"):
        PromptClassifier.load(table_path=tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="head is missing"):
        PromptClassifier.load(weights_path=tmp_path / "absent.npz")


# --- the shipped classifier ------------------------------------------------------------------------


def test_held_out_sets_are_balanced_and_unseen(held_out: tuple[str, list[training.LabelledPrompt]]) -> None:
    name, prompts = held_out
    counts = {service_type: sum(p.service_type is service_type for p in prompts) for service_type in ServiceType}
    assert len(prompts) >= MIN_HELD_OUT[name]
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    others = {
        p.text.strip().lower()
        for other in (TRAIN_PATH, *HELD_OUT_PATHS.values())
        if other != HELD_OUT_PATHS[name]
        for p in training.load_prompts(other)
    }
    assert not [p.id for p in prompts if p.text.strip().lower() in others]
    assert len({p.id for p in prompts}) == len(prompts)


def test_held_out_accuracy(classifier: PromptClassifier, held_out: tuple[str, list[training.LabelledPrompt]]) -> None:
    name, prompts = held_out
    probabilities = classifier.probabilities([p.text for p in prompts])
    predicted = [classifier.head.classes[i] for i in probabilities.argmax(axis=1)]
    accuracy = np.mean([p is t.service_type for p, t in zip(predicted, prompts, strict=True)])
    assert accuracy >= ACCURACY_FLOOR[name]


def test_shipped_head_comes_from_the_shipped_training_set_and_table(classifier: PromptClassifier) -> None:
    """Retraining (the script's last step, at the stored L2) gives the shipped head back."""
    with np.load(WEIGHTS_PATH) as shipped:
        assert str(shipped["train_sha256"]) == training.file_sha256(TRAIN_PATH)
        assert str(shipped["table_sha256"]) == training.file_sha256(TABLE_PATH)
        l2 = float(shipped["l2"])
    assert classifier.head.spec == training.FEATURES
    train = training.load_prompts(TRAIN_PATH)
    texts = [p.text for p in train]
    plain = StaticFeatures(classifier.features.table, dataclasses.replace(training.FEATURES, bow_scale=0.0))
    assert classifier.head.words == vocabulary_of(plain.text_terms(text) for text in texts)
    x = classifier.features.matrix(texts)
    head, fit = training.fit_head(x, [p.service_type for p in train], l2, classifier.head.spec, classifier.head.words)
    assert fit.gradient_norm < 1e-4
    np.testing.assert_allclose(head.probabilities(x), classifier.head.probabilities(x), atol=1e-3)


def test_classify_is_deterministic_and_matches_the_batch_path(classifier: PromptClassifier) -> None:
    text = "Can you translate 'where is the station' into Italian?"
    first, second = classifier.classify(text), classifier.classify(text)
    assert isinstance(first, Classification)
    assert (first.service_type, first.confidence) == (second.service_type, second.confidence)
    assert first.service_type is ServiceType.TRANSLATION
    assert 0 < first.latency_s < 1
    assert first.confidence == pytest.approx(float(classifier.probabilities([text])[0].max()), abs=1e-5)


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_prompt_is_chat_with_the_uniform_confidence(classifier: PromptClassifier, text: str) -> None:
    result = classifier.classify(text)
    assert result.service_type is ServiceType.CHAT
    assert result.confidence == EMPTY_CONFIDENCE == 1 / len(ServiceType)


def test_text_without_known_tokens_still_gets_a_type(classifier: PromptClassifier) -> None:
    """Only [UNK]s (every row zero): the bias decides, the confidence is a probability."""
    result = classifier.classify("😀😀😀")
    assert result.service_type in ServiceType
    assert 0 < result.confidence <= 1


def test_very_long_prompt_is_cut_and_classified(classifier: PromptClassifier) -> None:
    article = " ".join(
        f"In quarter {i} the edge cluster served {1000 + i} requests with a median latency of {20 + i % 7} ms."
        for i in range(2000)
    )  # ~200 kB
    text = f"Summarize the following report in three bullet points:\n\n{article}\n\nKeep the summary short, please."
    assert len(classifier.features.cut(text)) <= classifier.head.spec.max_chars + 1
    result = classifier.classify(text)
    assert result.service_type is ServiceType.SUMMARIZATION
    assert result.latency_s < 1


def test_inflections_share_their_prefix_term(classifier: PromptClassifier) -> None:
    """The prefix terms: one feature for a word's forms, in any language; short and non-alphabetic words alone."""
    features = classifier.features
    assert features.spec.prefix_chars == 4
    assert features.text_terms("Zusammenfassung") & features.text_terms("zusammenfassen") == {"~zusa"}
    assert "~resu" in features.text_terms("résume ceci") & features.text_terms("Résumer")  # accents normalised
    assert features.text_terms("the 12345 code") == {"the", "12345", "code"}


def test_head_and_features_must_agree(classifier: PromptClassifier) -> None:
    other = StaticFeatures(classifier.features.table, dataclasses.replace(classifier.head.spec, bow_scale=0.0))
    with pytest.raises(ValueError, match="trained on other features"):
        PromptClassifier(other, classifier.head)
    table = classifier.features.table
    smaller = dataclasses.replace(table, vectors=table.vectors[:, :8])
    with pytest.raises(ValueError, match="the table is layer"):
        StaticFeatures(smaller, classifier.head.spec)


def test_head_round_trips_through_its_file(classifier: PromptClassifier, tmp_path: Path) -> None:
    path = tmp_path / "head.npz"
    classifier.head.save(path, l2=0.0)
    loaded = LinearHead.load(path)
    assert (loaded.spec, loaded.words, loaded.classes) == (
        classifier.head.spec,
        classifier.head.words,
        classifier.head.classes,
    )
    np.testing.assert_array_equal(loaded.weights, classifier.head.weights)


def test_static_table_round_trips_through_its_file(classifier: PromptClassifier, tmp_path: Path) -> None:
    path = tmp_path / "table.npz"
    classifier.features.table.save(path)
    loaded = StaticTable.load(path)
    assert loaded.vocab == classifier.features.table.vocab
    np.testing.assert_array_equal(loaded.vectors, classifier.features.table.vectors)


# --- prompt_text ---------------------------------------------------------------------------------


def test_prompt_text_of_a_chat_request_is_the_last_user_message() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Write a Python function that sorts a list."},
                {"role": "assistant", "content": "def sort(xs): return sorted(xs)"},
                {"role": "user", "content": "Now translate its docstring into German."},
            ],
        }
    )
    assert prompt_text(request) == "Now translate its docstring into German."
    assert prompt_text(request.messages) == "Now translate its docstring into German."


def test_prompt_text_reads_only_text_parts() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "Describe it briefly."},
            ],
        }
    ]
    assert prompt_text(messages) == "What is in this picture?\nDescribe it briefly."


def test_prompt_text_without_a_user_message_falls_back_to_the_last_text() -> None:
    messages = [
        {"role": "system", "content": "Translate everything into French."},
        {"role": "assistant", "content": None},
    ]
    assert prompt_text(messages) == "Translate everything into French."
    assert prompt_text([{"role": "assistant", "content": None}]) == ""


def test_prompt_text_of_completions() -> None:
    assert prompt_text("Solve 2x + 3 = 7.") == "Solve 2x + 3 = 7."
    assert prompt_text(["first prompt", "second prompt"]) == "first prompt\nsecond prompt"
    assert prompt_text(CompletionRequest(model="m", prompt="Summarize: ...")) == "Summarize: ..."
    assert prompt_text(CompletionRequest(model="m", prompt=[101, 2023, 102])) == ""  # token ids: no text
    assert prompt_text([[1, 2], [3]]) == ""


def test_token_id_prompt_is_classified_as_empty(classifier: PromptClassifier) -> None:
    result = classifier.classify(prompt_text(CompletionRequest(model="m", prompt=[101, 2023, 102])))
    assert (result.service_type, result.confidence) == (ServiceType.CHAT, EMPTY_CONFIDENCE)
