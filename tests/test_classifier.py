"""The prompt classifier: the numpy MiniLM against sentence-transformers, the shipped head on the held-out
prompts, the request-text rules, and edge cases (empty, very long, determinism). Real model, real data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgecloud.classifier import Classification, PromptClassifier, prompt_text, training
from edgecloud.classifier.encoder import MiniLMEncoder, Truncation, gelu
from edgecloud.classifier.model import (
    EMPTY_CONFIDENCE,
    MAX_TOKENS,
    TEST_PATH,
    TRAIN_PATH,
    WEIGHTS_PATH,
    features,
)
from edgecloud.core.protocol import ChatCompletionRequest, CompletionRequest
from edgecloud.core.vocabulary import ServiceType

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"
MIN_COSINE = 0.9999
ACCURACY_TARGET = 0.90
MIN_HELD_OUT = 200


@pytest.fixture(scope="module")
def classifier() -> PromptClassifier:
    return PromptClassifier.load()


@pytest.fixture(scope="module")
def held_out() -> list[training.LabelledPrompt]:
    return training.load_prompts(TEST_PATH)


# --- the encoder ---------------------------------------------------------------------------------


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
    encoder = MiniLMEncoder.load(max_tokens=MAX_TOKENS, truncation=Truncation.HEAD_TAIL)
    text = "alpha " + "filler " * 100_000 + "omega"  # ~700 kB: cut to characters first, then to tokens
    ids = encoder.token_ids(text)
    words = encoder.tokenizer.decode(ids).split()
    assert len(ids) == MAX_TOKENS
    assert (ids[0], ids[-1]) == (encoder.cls_id, encoder.sep_id)
    assert words[0] == "alpha" and words[-1] == "omega"


# --- the shipped classifier ------------------------------------------------------------------------


def test_held_out_set_is_balanced_and_unseen(held_out: list[training.LabelledPrompt]) -> None:
    counts = {service_type: sum(p.service_type is service_type for p in held_out) for service_type in ServiceType}
    assert len(held_out) >= MIN_HELD_OUT
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    train_texts = {p.text.strip().lower() for p in training.load_prompts(TRAIN_PATH)}
    assert not [p.id for p in held_out if p.text.strip().lower() in train_texts]


def test_held_out_accuracy(classifier: PromptClassifier, held_out: list[training.LabelledPrompt]) -> None:
    probabilities = classifier.probabilities([p.text for p in held_out])
    predicted = [classifier.head.classes[i] for i in probabilities.argmax(axis=1)]
    accuracy = np.mean([p is t.service_type for p, t in zip(predicted, held_out, strict=True)])
    assert accuracy >= ACCURACY_TARGET


def test_shipped_weights_come_from_the_shipped_training_set(classifier: PromptClassifier) -> None:
    """Retraining (the script's last step, at the stored L2) gives the shipped head back."""
    with np.load(WEIGHTS_PATH) as shipped:
        assert str(shipped["train_sha256"]) == training.file_sha256(TRAIN_PATH)
        l2 = float(shipped["l2"])
    train = training.load_prompts(TRAIN_PATH)
    x = features(classifier.encoder, [p.text for p in train], classifier.head.layers)
    head, fit = training.fit_head(
        x,
        [p.service_type for p in train],
        l2,
        classifier.head.max_tokens,
        classifier.head.truncation,
        classifier.head.layers,
    )
    assert fit.gradient_norm < 1e-4
    retrained = head.probabilities(x)
    np.testing.assert_allclose(retrained, classifier.head.probabilities(x), atol=1e-3)


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


def test_very_long_prompt_is_truncated_and_classified(classifier: PromptClassifier) -> None:
    article = " ".join(
        f"In quarter {i} the edge cluster served {1000 + i} requests with a median latency of {20 + i % 7} ms."
        for i in range(2000)
    )  # ~200 kB
    text = f"Summarize the following report in three bullet points:\n\n{article}\n\nKeep the summary short, please."
    assert len(classifier.encoder.token_ids(text)) == MAX_TOKENS
    result = classifier.classify(text)
    assert result.service_type is ServiceType.SUMMARIZATION
    assert result.latency_s < 1


def test_head_and_encoder_settings_must_agree(classifier: PromptClassifier) -> None:
    other = MiniLMEncoder.load(max_tokens=MAX_TOKENS * 2, truncation=classifier.head.truncation)
    with pytest.raises(ValueError, match="trained on"):
        PromptClassifier(other, classifier.head)


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
