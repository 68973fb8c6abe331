"""What the simulated model says: text of exactly N tokens, and the piece each token streams.

Token counts come from a real tokenizer (SmolLM2's byte-level BPE, ``data/tokenizer.json``).
Exactness rests on one property of byte-level BPE: the pre-tokenizer first splits text into
units (a word with its leading space, a run of digits, of punctuation, of whitespace) and BPE
never merges across units. Text cut at a unit boundary therefore re-tokenizes to the sum of its
units' tokens, except after a trailing whitespace unit (``"\\n\\n"`` at the very end is one unit
but two inside text), so a cut never ends on whitespace; the few tokens still missing are
filled with single-token words (" and", " so", " on"), which stay separate units after any text.
Each unit's tokens are decoded incrementally, so a character split across byte-level tokens
streams as ``""`` then the whole character, and the pieces always join to the full text.
"""

from __future__ import annotations

import bisect
import codecs
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_TOKENIZER_FILE = DATA_DIR / "tokenizer.json"
DEFAULT_CORPUS_FILE = DATA_DIR / "corpus.jsonl"
FILLER_WORDS = (" and", " so", " on")
ENTRY_SEPARATOR = "\n\n"
ECHO_SEPARATOR = "\n"
CACHED_TOKENS_MAX = 4096  # texts up to this length are kept (1,024 of them at most)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to the printable characters byte-level BPE uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


_UNICODE_TO_BYTE = {char: byte for byte, char in _bytes_to_unicode().items()}


@dataclass(frozen=True)
class Unit:
    """One pre-tokenizer unit: its text and the text piece each of its tokens streams."""

    text: str
    pieces: tuple[str, ...]

    @property
    def is_space(self) -> bool:
        return self.text.isspace()


@dataclass(frozen=True)
class GeneratedText:
    """A completion: ``len(pieces)`` tokens whose pieces join to ``text``."""

    text: str
    pieces: tuple[str, ...]


class TokenCodec:
    """The tokenizer: counts tokens and splits text into units with per-token pieces."""

    def __init__(self, path: Path = DEFAULT_TOKENIZER_FILE):
        self._tokenizer = Tokenizer.from_file(str(path))
        self._pre_tokenizer = self._tokenizer.pre_tokenizer
        self._piece_bytes: dict[int, bytes] = {}

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def count(self, text: str) -> int:
        return len(self.encode(text)) if text else 0

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def _token_bytes(self, token_id: int) -> bytes:
        cached = self._piece_bytes.get(token_id)
        if cached is None:
            token = self._tokenizer.id_to_token(token_id) or ""
            cached = bytes(_UNICODE_TO_BYTE[char] for char in token)
            self._piece_bytes[token_id] = cached
        return cached

    def units(self, text: str) -> list[Unit]:
        """The pre-tokenizer units of ``text``, each with the pieces of its tokens."""
        spans = [text[start:end] for _, (start, end) in self._pre_tokenizer.pre_tokenize_str(text)]
        encodings = self._tokenizer.encode_batch(spans, add_special_tokens=False)
        units = []
        for span, encoding in zip(spans, encodings, strict=True):
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            pieces = tuple(decoder.decode(self._token_bytes(token_id)) for token_id in encoding.ids)
            units.append(Unit(span, pieces))
        return units

    def single_token_unit(self, word: str) -> Unit:
        (unit,) = self.units(word)
        if len(unit.pieces) != 1:
            raise ValueError(f"filler {word!r} is not a single token for this tokenizer")
        return unit


class CyclicText:
    """A text repeated forever, cut into exactly-N-token completions at unit boundaries.

    ``units`` must tile the cycle: the text followed by itself splits into the same units.
    """

    def __init__(self, units: Sequence[Unit], filler: Sequence[Unit]):
        if not any(unit.pieces for unit in units):
            raise ValueError("cannot cycle a text without tokens")
        self._units = list(units)
        self._filler = list(filler)
        self._pieces: list[str] = [piece for unit in self._units for piece in unit.pieces]
        self._token_start = [0]  # token offset of each unit, over two cycles (for wrap-around)
        for unit in self._units * 2:
            self._token_start.append(self._token_start[-1] + len(unit.pieces))
        self._pieces2 = self._pieces * 2
        self.cycle_tokens = len(self._pieces)

    def take(self, start_unit: int, n_tokens: int) -> GeneratedText:
        """``n_tokens`` tokens of the cycle from unit ``start_unit``, re-tokenizing to exactly that many."""
        count = len(self._units)
        start = start_unit % count
        offset = self._token_start[start]
        cycles, rest = divmod(n_tokens, self.cycle_tokens)
        # Whole units that fit, counted from `start` across cycles; never end on whitespace.
        length = cycles * count + bisect.bisect_right(self._token_start, offset + rest, lo=start) - 1 - start
        while length > 0 and self._units[(start + length - 1) % count].is_space:
            length -= 1
        whole, part = divmod(length, count)
        pieces = self._pieces2[offset : offset + self.cycle_tokens] * whole
        pieces += self._pieces2[offset : self._token_start[start + part]]
        missing = n_tokens - len(pieces)
        pieces += [self._filler[i % len(self._filler)].pieces[0] for i in range(missing)]
        return GeneratedText("".join(pieces), tuple(pieces))


@dataclass(frozen=True)
class CorpusEntry:
    task: str
    prompt: str
    answer: str


def load_corpus(path: Path = DEFAULT_CORPUS_FILE) -> list[CorpusEntry]:
    entries = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                entries.append(CorpusEntry(str(raw["task"]), str(raw["prompt"]), str(raw["answer"]).strip()))
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}:{number}: expected JSON with task, prompt, answer ({exc})") from exc
    if not entries:
        raise ValueError(f"{path}: the corpus is empty")
    return entries


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (``hash()`` of a str is not)."""
    return zlib.crc32(text.encode("utf-8"))


class _Answers:
    """Corpus answers laid end to end, cycled, with where each entry starts and which prompt it answers."""

    def __init__(self, codec: TokenCodec, entries: Sequence[CorpusEntry], filler: Sequence[Unit]):
        separator = codec.units(ENTRY_SEPARATOR + "x")[:-1]  # "\n\n" before text: two "\n" units
        units: list[Unit] = []
        self.entry_start: list[int] = []
        for entry in entries:
            self.entry_start.append(len(units))
            units += codec.units(entry.answer) + separator
        self.text = CyclicText(units, filler)
        self.by_prompt = {entry.prompt.strip(): index for index, entry in enumerate(entries)}

    def entry_index(self, prompt: str, seed: int | None) -> int:
        """The entry a request starts from: its own answer if the prompt is an entry's, else chosen by the
        seed, else by a stable hash of the prompt."""
        known = self.by_prompt.get(prompt.strip())
        if known is not None:
            return known
        key = seed if seed is not None else stable_hash(prompt)
        return key % len(self.entry_start)

    def take(self, prompt: str, n_tokens: int, seed: int | None) -> GeneratedText:
        return self.text.take(self.entry_start[self.entry_index(prompt, seed)], n_tokens)


class ContentSource:
    """Chooses the completion text: ``corpus`` answers or an ``echo`` of the prompt.

    A request whose service type is known (the gateway sends it, ``core.protocol.SERVICE_TYPE_HEADER``)
    is answered from the corpus entries of that task only, cycling through them, so a greeting is not
    answered with a proof; an absent or unknown type draws from the whole corpus.
    """

    def __init__(self, codec: TokenCodec, entries: Iterable[CorpusEntry], mode: str = "corpus"):
        if mode not in ("corpus", "echo"):
            raise ValueError(f"content mode must be 'corpus' or 'echo', got {mode!r}")
        self.codec = codec
        self.mode = mode
        self._entries = list(entries)
        self._filler = [codec.single_token_unit(word) for word in FILLER_WORDS]
        self._corpus = _Answers(codec, self._entries, self._filler)
        self._by_task = {
            task: _Answers(codec, [entry for entry in self._entries if entry.task == task], self._filler)
            for task in dict.fromkeys(entry.task for entry in self._entries)
        }
        self._echo = lru_cache(maxsize=256)(self._echo_text)
        self._generate = lru_cache(maxsize=1024)(self._uncached_generate)

    @property
    def entries(self) -> list[CorpusEntry]:
        return list(self._entries)

    @property
    def tasks(self) -> list[str]:
        return list(self._by_task)

    def entry_index(self, prompt: str, seed: int | None) -> int:
        """The corpus entry a request of unknown type starts from (see ``_Answers.entry_index``)."""
        return self._corpus.entry_index(prompt, seed)

    def _echo_text(self, prompt: str) -> CyclicText:
        return CyclicText(self.codec.units(prompt + ECHO_SEPARATOR), self._filler)

    def generate(self, prompt: str, n_tokens: int, seed: int | None, task: str | None = None) -> GeneratedText:
        """Exactly ``n_tokens`` tokens of text for ``prompt`` (of service type ``task`` if known); the same
        arguments give the same text."""
        if n_tokens > CACHED_TOKENS_MAX:  # long texts are cheap to rebuild next to their streaming time
            return self._uncached_generate(prompt, n_tokens, seed, task)
        return self._generate(prompt, n_tokens, seed, task)

    def _uncached_generate(self, prompt: str, n_tokens: int, seed: int | None, task: str | None) -> GeneratedText:
        if n_tokens <= 0:
            return GeneratedText("", ())
        stripped = prompt.strip()
        if self.mode == "echo" and stripped:
            return self._echo(stripped).take(0, n_tokens)
        return self._by_task.get(task or "", self._corpus).take(prompt, n_tokens, seed)
