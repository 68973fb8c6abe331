"""MiniLM's WordPiece tokenisation in plain Python, with a word cache: ids in microseconds, not milliseconds.

The ``tokenizers`` package takes about 1 µs per character on this machine (90 µs for 100 characters,
1 ms for 1,000: docs/classifier.md), twice the classifier's whole budget for a long prompt. Most of it is
the general machinery (offsets, alignments, normalisation maps) the classifier does not need. Here the same
steps as the model's ``tokenizer.json`` (BertNormalizer, BertPreTokenizer, WordPiece) run as a few regular
expressions over the whole text and one dict lookup per word; words not in the vocabulary are split once
and cached. ``tests/test_classifier.py`` checks the ids against ``tokenizers`` on every labelled prompt.

The steps, as in HF tokenizers' ``bert.rs`` and ``wordpiece.rs``:

1. clean: remove NUL, U+FFFD and control characters (categories C*, except tab, newline, carriage return);
2. CJK ideographs become words of their own;
3. strip accents (NFD, then drop nonspacing marks), lower-case;
4. split on white space and around each punctuation character (ASCII punctuation and categories P*);
5. WordPiece: the longest vocabulary prefix, then the longest ``##`` piece, and so on; a word with no
   split, or longer than ``max_input_chars_per_word``, is one ``[UNK]``.
"""

from __future__ import annotations

import functools
import json
import re
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path

# Unicode categories of characters the normaliser removes (Rust's char::is_other: Cc, Cf, Cs, Co, Cn).
REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
KEPT_CONTROLS = "\t\n\r"
# Rust's char::is_whitespace (the Unicode White_Space property), which BertPreTokenizer splits on.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
# The code-point blocks BertNormalizer's handle_chinese_chars isolates (bert.rs, is_chinese_char).
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
# Distinct words whose WordPiece split is kept (a few MB at most); whole-vocabulary words need no cache.
WORD_CACHE_SIZE = 65536


def _char_class(codepoints: list[int]) -> str:
    """A regex character class body of these code points, as ranges."""
    parts: list[str] = []
    start = previous = None
    for cp in [*sorted(codepoints), None]:
        if cp is not None and previous is not None and cp == previous + 1:
            previous = cp
            continue
        if start is not None and previous is not None:
            parts.append(re.escape(chr(start)) + ("" if start == previous else "-" + re.escape(chr(previous))))
        start = previous = cp
    return "".join(parts)


ASCII_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Code points outside the Basic Multilingual Plane (emoji, rare CJK, ...), handled one by one: a regex class
# with them in it is a linear list of ranges, with BMP characters only it is one table lookup per character.
ASTRAL_START = 0x10000
ASTRAL = re.compile("[\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Patterns:
    """The normaliser's character classes, built once per process (~0.5 s: every code point's category)."""

    removed: re.Pattern[str]  # BMP characters clean_text drops
    marks: re.Pattern[str]  # BMP nonspacing marks, dropped after NFD
    # A run of anything but punctuation, white space and CJK ideographs; or one ideograph; or one punctuation
    # character. Matching ideographs one by one is handle_chinese_chars without rewriting the text.
    words: re.Pattern[str]


@functools.cache
def _patterns() -> Patterns:
    removed, marks, punctuation = [], [], [ord(c) for c in string.punctuation]
    for cp in range(ASTRAL_START):
        category = unicodedata.category(chr(cp))
        if (category in REMOVED_CATEGORIES and chr(cp) not in KEPT_CONTROLS) or cp == 0xFFFD:
            removed.append(cp)
        elif category == "Mn":
            marks.append(cp)
        elif category.startswith("P") and cp > 0x7F:
            punctuation.append(cp)
    cjk = "".join(re.escape(chr(lo)) + "-" + re.escape(chr(hi)) for lo, hi in CJK_RANGES if hi < ASTRAL_START)
    punct, space = _char_class(punctuation), _char_class([ord(c) for c in WHITESPACE])
    return Patterns(
        removed=re.compile(f"[{_char_class(removed)}]"),
        marks=re.compile(f"[{_char_class(marks)}]"),
        words=re.compile(f"[^{punct}{space}{cjk}]+|[{cjk}]|[{punct}]"),
    )


def _astral(match: re.Match[str]) -> str:
    """One non-BMP character after NFD: dropped (C*, Mn), set apart as a word (P*, CJK), or kept."""
    char = match.group()
    category = unicodedata.category(char)
    if category in REMOVED_CATEGORIES or category == "Mn":
        return ""
    cjk = any(lo <= ord(char) <= hi for lo, hi in CJK_RANGES)
    return f" {char} " if cjk or category.startswith("P") else char


class WordPiece:
    """Text to MiniLM token ids (no [CLS]/[SEP]) and to its normalised words. Thread-safe after construction."""

    def __init__(self, vocab: dict[str, int], unk_token: str, prefix: str, max_chars_per_word: int) -> None:
        self.vocab = vocab
        self.unk_id = vocab[unk_token]
        self.prefix = prefix
        self.max_chars_per_word = max_chars_per_word
        self.patterns = _patterns()
        self._split = functools.lru_cache(maxsize=WORD_CACHE_SIZE)(self._wordpiece)

    @classmethod
    def from_file(cls, path: Path) -> WordPiece:
        """From a ``tokenizer.json`` with BertNormalizer (lower-casing), BertPreTokenizer and WordPiece."""
        raw = json.loads(path.read_text())
        normalizer, model = raw["normalizer"], raw["model"]
        expected = {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "lowercase": True}
        if (
            any(normalizer.get(key) != value for key, value in expected.items())
            or normalizer.get("strip_accents") is False
        ):
            raise ValueError(f"{path}: expected a lower-casing BertNormalizer, got {normalizer}")
        if raw["pre_tokenizer"] != {"type": "BertPreTokenizer"} or model["type"] != "WordPiece":
            raise ValueError(f"{path}: expected BertPreTokenizer and WordPiece")
        return cls(
            model["vocab"], model["unk_token"], model["continuing_subword_prefix"], model["max_input_chars_per_word"]
        )

    def words(self, text: str) -> list[str]:
        """The normalised words (before WordPiece): lower case, no accents, punctuation split off."""
        if text.isascii():
            return self.patterns.words.findall(ASCII_CONTROLS.sub("", text).lower())
        patterns = self.patterns
        text = patterns.marks.sub("", unicodedata.normalize("NFD", patterns.removed.sub("", text)))
        return patterns.words.findall(ASTRAL.sub(_astral, text).lower())

    def ids(self, text: str) -> list[int]:
        return self.ids_of(self.words(text))

    def ids_of(self, words: list[str]) -> list[int]:
        """Token ids of normalised words (``words``)."""
        vocab, split = self.vocab, self._split
        ids: list[int] = []
        for word in words:
            whole = vocab.get(word)
            if whole is None:
                ids.extend(split(word))
            else:
                ids.append(whole)
        return ids

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        if len(word) > self.max_chars_per_word:
            return (self.unk_id,)
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    pieces.append(self.vocab[piece])
                    start = end
                    break
            else:
                return (self.unk_id,)
        return tuple(pieces)
