"""Completion text: exactly the requested number of tokens, streamed pieces that join to it."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from edgecloud.llmsim.content import ENTRY_SEPARATOR, ContentSource, TokenCodec, load_corpus


@pytest.fixture(scope="module")
def codec() -> TokenCodec:
    return TokenCodec()


@pytest.fixture(scope="module")
def corpus(codec: TokenCodec) -> ContentSource:
    return ContentSource(codec, load_corpus(), "corpus")


@pytest.fixture(scope="module")
def echo(codec: TokenCodec) -> ContentSource:
    return ContentSource(codec, load_corpus(), "echo")


def test_corpus_covers_the_papers_task_kinds() -> None:
    entries = load_corpus()
    assert 40 <= len(entries) <= 60
    kinds = Counter(entry.task for entry in entries)
    assert set(kinds) == {
        "chat",
        "translation",
        "summarization",
        "information_extraction",
        "science_reasoning",
        "math",
        "coding",
    }
    assert all(len(entry.answer.split()) >= 150 for entry in entries)


def lengths() -> list[int]:
    rng = random.Random(3)
    return [*range(1, 130), 255, 256, 257, 1000, 1024, *(rng.randint(2, 20_000) for _ in range(8))]


def test_corpus_text_has_exactly_the_requested_token_count(codec: TokenCodec, corpus: ContentSource) -> None:
    rng = random.Random(5)
    for n_tokens in lengths():
        seed = rng.randrange(1000)
        generated = corpus.generate("any prompt", n_tokens, seed)
        assert len(generated.pieces) == n_tokens
        assert codec.count(generated.text) == n_tokens, (n_tokens, seed)
        assert "".join(generated.pieces) == generated.text


def test_every_corpus_entry_and_wrap_around_counts_exactly(codec: TokenCodec, corpus: ContentSource) -> None:
    cycle = corpus._corpus.text.cycle_tokens  # a length that wraps past the end of the corpus
    for seed in range(len(corpus.entries)):
        for n_tokens in (7, 300, cycle + 5):
            generated = corpus.generate("", n_tokens, seed)
            assert codec.count(generated.text) == n_tokens, (seed, n_tokens)
    for task in corpus.tasks:  # each task's own cycle, wrapped past its end too
        for seed in range(3):
            for n_tokens in (7, cycle + 5):
                assert codec.count(corpus.generate("", n_tokens, seed, task).text) == n_tokens, (task, n_tokens)


@pytest.mark.parametrize(
    "prompt",
    [
        "Why is the sky blue?",
        "aaa",
        "a  b\n\nc",
        "  padded prompt  ",
        "日本語のテキストです",
        "café, naïve, façade!!",
        "ends with digits 2024",
        "don't stop",
        "x",
    ],
)
def test_echo_repeats_the_prompt_with_exact_counts(codec: TokenCodec, echo: ContentSource, prompt: str) -> None:
    for n_tokens in (*range(1, 40), 97, 500):
        generated = echo.generate(prompt, n_tokens, None)
        assert codec.count(generated.text) == n_tokens, (prompt, n_tokens)
        assert "".join(generated.pieces) == generated.text
    long = echo.generate(prompt, 200, None).text
    assert long.startswith(prompt.strip()[:1])


def test_multibyte_characters_stream_as_whole_characters(echo: ContentSource) -> None:
    generated = echo.generate("日本語のテキストです", 60, None)
    assert "\ufffd" not in generated.text
    assert "" in generated.pieces  # a token that ends mid-character streams nothing yet
    assert all("\ufffd" not in piece for piece in generated.pieces)


def test_choice_is_deterministic_by_seed_or_prompt(corpus: ContentSource) -> None:
    assert corpus.generate("hello", 50, 1) == corpus.generate("hello", 50, 1)
    assert corpus.generate("hello", 50, 1).text != corpus.generate("hello", 50, 2).text
    assert corpus.generate("hello", 50, None) == corpus.generate("hello", 50, None)
    entry = corpus.entries[3]
    assert corpus.generate(entry.prompt, 20, 99).text == corpus.generate(entry.prompt, 20, None).text
    assert entry.answer.startswith(corpus.generate(entry.prompt, 20, None).text.split()[0])


def test_prompt_counting_matches_the_tokenizer(codec: TokenCodec) -> None:
    assert codec.count("") == 0
    assert codec.count("Hello world") == 2
    assert codec.count("<|im_start|>user\nhi<|im_end|>\n") == len(codec.encode("<|im_start|>user\nhi<|im_end|>\n"))


def test_a_request_of_known_type_is_answered_in_kind(corpus: ContentSource) -> None:
    """The gateway's x-service-type picks that task's answers; each request gets a real answer of its kind."""
    for task in corpus.tasks:
        answers = [entry.answer for entry in corpus.entries if entry.task == task]
        for seed in range(12):
            text = corpus.generate("a prompt of its own", 400, seed, task).text
            first = text.split(ENTRY_SEPARATOR)[0]
            assert any(answer.startswith(first) for answer in answers), (task, seed)
            assert all(other.answer not in text for other in corpus.entries if other.task != task)
    assert corpus.generate("hi", 50, 1, "no-such-type") == corpus.generate("hi", 50, 1)
