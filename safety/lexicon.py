"""Sensitive-term lexicon: finds English and Chinese terms however they are disguised.

The terms live in ``safety/data/lexicon.toml`` (its header documents the format), one list per
category and language; an entry's id, ``category:lang:NNN``, is what a ``Finding`` reports as its
rule. ``Lexicon.load()`` compiles them into two Aho-Corasick automata (``pyahocorasick``), and
``Lexicon.find(text)`` reads the text once per automaton, whatever the number of entries.

The text is first normalized (``safety.normalize``: invisible characters dropped, NFKC, look-alike
letters folded, case folded, accents stripped) with a map back to the original characters, so every
finding's span covers the original, disguised spelling and can be masked.

Latin entries match whole words only. The normalized text is cut into words (runs of letters,
digits and leetspeak symbols). Inside a word with letters, leetspeak is read (``sh1t``, ``a$$``,
``@ss``; digits only where letters are at least as many, so ``A55`` stays a model number; ``1`` is
``i`` or ``l``, whichever makes a word of the entries). Three or more single letters in a row,
apart by the same separator, are glued into one word (``f u c k``, ``f.u.c.k``, ``f*u*c*k``; but
not ``s, b``). A run of one letter is written once, with its length. The words go into a "word
stream", one space apart, and entries are compiled the same way. A hit counts only if it starts
and ends on a word boundary and each letter occurs as often as in the entry, or is stretched to
three or more: ``fuuuck``, ``shiiit`` and ``asss`` match, while ``as``, ``assess``, ``class``,
``assistant`` and ``Scunthorpe`` do not. A phrase also matches written as one word (``killyourself``).

Chinese entries match as substrings: the characters are read without the spaces, punctuation and
symbols between them (``傻 逼``, ``傻*逼``), traditional characters folded to simplified. An allowlist
of ordinary words and phrases (``操作``, ``体操``, ``chink in the armor``) drops a hit that such a
phrase overlaps and does not lie wholly inside.

Findings of one category never overlap (the longest wins); findings of different categories may,
since the policy may act on them differently.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ahocorasick

from safety.findings import Finding
from safety.normalize import LEET, LEET_ALTERNATIVES, Normalized, normalize

__all__ = ["DEFAULT_LEXICON_FILE", "Lexicon", "expand"]

DEFAULT_LEXICON_FILE = Path(__file__).parent / "data" / "lexicon.toml"

# Scripts written without spaces between words: they end a Latin word.
_CJK = (
    "\u2e80-\u2fdf\u3000-\u30ff\u3100-\u31bf\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\U00020000-\U0003134f"
)
_HAN = re.compile(f"[{_CJK}]")
_LEET_SYMBOLS = "".join(c for c in LEET if not c.isalnum())
_EDGE_ONLY = "!¡|+"  # leet symbols read as letters only inside a word ("sh!t", but "fuck!")
_SEGMENT = re.compile(f"(?:[^\\W_{_CJK}]|[{re.escape(_LEET_SYMBOLS)}])+")
_TRAILING_SEGMENT = re.compile(f"{_SEGMENT.pattern}\\Z")
_LOWER_WORD = re.compile("[a-z]+")
_CLITIC = re.compile("[^\\W_]['\u2019][a-z]")
_SPELLED = re.compile(r"[a-z](?P<sep>[^\w\s])[a-z](?:(?P=sep)[a-z])+")
_DOUBLED = re.compile(r"(.)\1")
_RUNS = re.compile(r"(.)\1+")
_ALNUM = re.compile(r"[^\W_]")
_SEPARATORS = re.compile(r"[\W_]+")
_DIGITS = frozenset("0123456789")
_LATIN_KEY = re.compile("[a-z]+(?: [a-z]+)*")
_NOT_LETTERS = re.compile(f"[0-9{re.escape(_LEET_SYMBOLS)}]")  # in a Latin entry
_BRACES = re.compile(r"\{([^{}]*)\}")
_CATEGORY = re.compile("[a-z][a-z_]*")


def expand(entry: str) -> list[str]:
    """The phrases an entry stands for: ``"fuck{,s} {you,u}"`` -> four phrases."""
    pieces = _BRACES.split(entry)
    literal = pieces[::2]
    if any("{" in piece or "}" in piece for piece in literal):
        raise ValueError(f"unbalanced or nested braces in {entry!r}")
    choices = [[piece] if i % 2 == 0 else piece.split(",") for i, piece in enumerate(pieces)]
    phrases = (" ".join("".join(combo).split()) for combo in itertools.product(*choices))
    return list(dict.fromkeys(p for p in phrases if p))


@dataclass
class _WordStream:
    """Words of a skeleton, one space apart, letter runs collapsed; per position, where it came from."""

    text: str
    first: list[int]  # skeleton index of the first character of the run (-1 at a space)
    last: list[int]  # skeleton index of its last character
    run: list[int]  # how many times the letter repeats (0 at a space)
    glued: set[int]  # positions of single-letter words glued onto the one before ("f u c k")


@dataclass
class _Words:
    """A skeleton's words as (word, start, plain) and their word stream."""

    words: list[tuple[str, int, bool]]
    stream: _WordStream


def _read_leet(word: str, vocabulary: frozenset[str]) -> str:
    """The word with leetspeak read as letters; "#" for a word without any a-z letter.

    Where a character has two readings (``1`` is ``i`` or ``l``), the reading that makes a word of
    the entries (``vocabulary``, letter runs collapsed) wins: ``k1ll`` is "kill", ``1oser`` "loser".
    """
    letters = sum(1 for c in word if "a" <= c <= "z")
    if not letters:
        return "#"
    digits = sum(1 for c in word if c in _DIGITS)
    read_digits = letters >= 2 and letters >= digits
    read = [LEET[c] if c in LEET and (read_digits or c not in _DIGITS) else c for c in word]
    ambiguous = [i for i, c in enumerate(word) if c in LEET_ALTERNATIVES and read[i] != c][:3]
    first = "".join(read)
    if not ambiguous or _collapse(first) in vocabulary:
        return first
    for choice in itertools.product((False, True), repeat=len(ambiguous)):
        for i, second in zip(ambiguous, choice, strict=True):
            read[i] = LEET_ALTERNATIVES[word[i]] if second else LEET[word[i]]
        candidate = "".join(read)
        if _collapse(candidate) in vocabulary:
            return candidate
    return first


def _collapse(word: str) -> str:
    return _RUNS.sub(r"\1", word)


def _words(skeleton: str, vocabulary: frozenset[str]) -> list[tuple[str, int, bool]]:
    """The words of a skeleton as (word, start, plain), leetspeak read.

    A word without any letter a-z (a number, a word in another script) becomes "#", which matches
    nothing and ends a phrase.
    """
    words = []
    for match in _SEGMENT.finditer(skeleton):
        word = match.group()
        start = match.start()
        if word[0] in _EDGE_ONLY or word[-1] in _EDGE_ONLY:
            inner = word.lstrip(_EDGE_ONLY)
            start += len(word) - len(inner)
            word = inner.rstrip(_EDGE_ONLY)
            if not word:
                continue
        if _LOWER_WORD.fullmatch(word):
            words.append((word, start, True))
            continue
        if _SPELLED.fullmatch(word):  # "f!u!c!k", "f$u$c$k": letters apart by one leet symbol
            words.extend((word[i], start + i, True) for i in range(0, len(word), 2))
            continue
        read = _read_leet(word, vocabulary)
        words.append((read, start, False) if read != "#" else ("#" * len(word), start, False))
    return words


def _growing_word(words: list[tuple[str, int, bool]], tail_start: int, end: int) -> bool:
    """Whether the last word is the whole trailing segment, plain letters, more than one of them (what
    follows only lengthens its reading; a single letter may still be glued into a spelled word)."""
    if not words:
        return False
    word, start, plain = words[-1]
    return plain and len(word) > 1 and start == tail_start and start + len(word) == end


def _glue_kind(gap: str) -> str:
    """How two single letters are apart when they may spell one word ("f u c k", "f.u.c.k"), else "".

    Up to three characters, all whitespace or all punctuation: ``s, b`` or ``a + s`` stay apart.
    """
    if not gap or len(gap) > 3 or _ALNUM.search(gap):
        return ""
    if gap.isspace():
        return " "
    return "" if any(c.isspace() for c in gap) else gap


def _glued(skeleton: str, words: list[tuple[str, int, bool]]) -> list[bool]:
    """For each word: is it a single letter to glue onto the one before?

    Three or more single letters in a row, all with the same kind of separator, spell a word; the
    letter of a clitic ("user's", "don't") is no single letter.
    """
    glued = [False] * len(words)
    single = [
        len(word) == 1 and "a" <= word <= "z" and not _CLITIC.match(skeleton, max(0, start - 2), start + 1)
        for word, start, _ in words
    ]
    i = 0
    while i < len(words):
        if not single[i]:
            i += 1
            continue
        j, kind = i, ""
        while j + 1 < len(words) and single[j + 1]:
            gap = _glue_kind(skeleton[words[j][1] + 1 : words[j + 1][1]])
            if not gap or kind not in ("", gap):
                break
            kind, j = gap, j + 1
        if j - i >= 2:
            glued[i + 1 : j + 1] = [True] * (j - i)
            i = j + 1
        else:
            i += 1
    return glued


def _word_stream(
    skeleton: str,
    vocabulary: frozenset[str] = frozenset(),
    words: list[tuple[str, int, bool]] | None = None,  # ``_words(skeleton, vocabulary)``, if already made
) -> _WordStream:
    parts: list[str] = []
    first: list[int] = []
    last: list[int] = []
    run: list[int] = []
    glued: set[int] = set()
    words = _words(skeleton, vocabulary) if words is None else words
    for (word, start, plain), glue in zip(words, _glued(skeleton, words), strict=True):
        if glue:
            if parts[-1][-1] == word:
                run[-1] += 1
                last[-1] = start
            else:
                glued.add(len(first))
                parts.append(word)
                first.append(start)
                last.append(start)
                run.append(1)
            continue
        if first:
            parts.append(" ")
            first.append(-1)
            last.append(-1)
            run.append(0)
        size = len(word)
        if word[0] == "#":
            parts.append("#")
            first.append(start)
            last.append(start + size - 1)
            run.append(1)
            continue
        if plain and not _DOUBLED.search(word):
            parts.append(word)
            positions = range(start, start + size)
            first.extend(positions)
            last.extend(positions)
            run.extend([1] * size)
            continue
        collapsed = []
        previous = ""
        for offset, char in enumerate(word):
            if char == previous:
                run[-1] += 1
                last[-1] = start + offset
            else:
                collapsed.append(char)
                first.append(start + offset)
                last.append(start + offset)
                run.append(1)
                previous = char
        parts.append("".join(collapsed))
    return _WordStream("".join(parts), first, last, run, glued)


@dataclass(frozen=True, slots=True)
class _Pattern:
    rule: str
    category: str | None  # None for an allowlist phrase
    length: int
    runs: tuple[int, ...] = ()  # length of each letter run of a Latin entry (0 at a space)
    open_start: bool = False  # a Chinese entry starting with a Latin letter or digit ("a片")
    open_end: bool = False


_Hit = tuple[_Pattern, int, int]  # pattern, span in the original text


@dataclass(frozen=True)
class _Entry:
    rule: str
    category: str | None
    phrase: str


def _latin_patterns(entry: _Entry) -> list[tuple[str, _Pattern]]:
    skeleton = normalize(entry.phrase).text
    if _NOT_LETTERS.search(skeleton):
        raise ValueError(f"{entry.rule}: {entry.phrase!r} must be made of letters a-z")
    variants = dict.fromkeys([skeleton, _SEPARATORS.sub("", skeleton)])
    compiled = []
    for variant in variants:
        stream = _word_stream(variant)
        if not _LATIN_KEY.fullmatch(stream.text):
            raise ValueError(f"{entry.rule}: {entry.phrase!r} must be made of letters a-z")
        pattern = _Pattern(entry.rule, entry.category, len(stream.text), tuple(stream.run))
        compiled.append((stream.text, pattern))
    return compiled


def _automaton(keyed: Mapping[str, list[_Pattern]]) -> Any:
    if not keyed:
        return None
    automaton = ahocorasick.Automaton()
    for key, patterns in keyed.items():
        automaton.add_word(key, tuple(patterns))
    automaton.make_automaton()
    return automaton


def _fold_table(spec: str) -> dict[int, str]:
    table = {}
    for pair in spec.split():
        if len(pair) != 2:
            raise ValueError(f"[fold] traditional: {pair!r} is not a pair of characters")
        table[ord(pair[0])] = pair[1]
    return table


def _entries(data: Mapping[str, Any]) -> Iterator[_Entry]:
    for lang, table in data.items():
        if lang in ("fold", "allow"):
            continue
        if not isinstance(table, dict):
            raise ValueError(f"[{lang}] must be a table of category lists")
        for category, items in table.items():
            if not _CATEGORY.fullmatch(category) or not isinstance(items, list):
                raise ValueError(f"[{lang}] {category}: expected a list under a lower-case category name")
            for number, item in enumerate(items, start=1):
                for phrase in expand(str(item)):
                    yield _Entry(f"{category}:{lang}:{number:03d}", category, phrase)
    for lang, items in data.get("allow", {}).items():
        for number, item in enumerate(items, start=1):
            for phrase in expand(str(item)):
                yield _Entry(f"allow:{lang}:{number:03d}", None, phrase)


def _keep_allowed(hits: list[_Hit]) -> list[_Hit]:
    """Drop hits that an allowlist phrase overlaps without lying wholly inside them."""
    allowed = [(start, end) for pattern, start, end in hits if pattern.category is None]
    if not allowed:
        return hits
    kept = []
    for hit in hits:
        pattern, start, end = hit
        if pattern.category is None:
            continue
        if any(
            a_start < end
            and start < a_end
            and not (start <= a_start and a_end <= end and a_end - a_start < end - start)
            for a_start, a_end in allowed
        ):
            continue
        kept.append(hit)
    return kept


def _longest_per_category(findings: list[Finding]) -> list[Finding]:
    kept: list[Finding] = []
    taken: dict[str, list[tuple[int, int]]] = {}
    for finding in sorted(set(findings), key=lambda f: (f.start - f.end, f.start, f.rule)):
        spans = taken.setdefault(finding.category, [])
        if all(finding.end <= start or end <= finding.start for start, end in spans):
            spans.append((finding.start, finding.end))
            kept.append(finding)
    return sorted(kept, key=lambda f: (f.start, f.end, f.category, f.rule))


class Lexicon:
    """A compiled sensitive-term lexicon. Build it once with ``Lexicon.load()``; it never changes after."""

    __slots__ = (
        "_categories",
        "_counts",
        "_fold",
        "_han",
        "_han_longest",
        "_latin",
        "_latin_longest",
        "_vocabulary",
    )

    def __init__(self, data: Mapping[str, Any]) -> None:
        """Compile parsed lexicon data (the tables of a lexicon file)."""
        self._fold = _fold_table(str(data.get("fold", {}).get("traditional", "")))
        latin: dict[str, list[_Pattern]] = {}
        han: dict[str, list[_Pattern]] = {}
        for entry in _entries(data):
            skeleton = normalize(entry.phrase).text
            if _HAN.search(skeleton):
                key = _SEPARATORS.sub("", skeleton).translate(self._fold)
                pattern = _Pattern(
                    entry.rule,
                    entry.category,
                    len(key),
                    open_start=key[0].isascii() and key[0].isalnum(),
                    open_end=key[-1].isascii() and key[-1].isalnum(),
                )
                han.setdefault(key, []).append(pattern)
            else:
                for key, pattern in _latin_patterns(entry):
                    latin.setdefault(key, []).append(pattern)
        self._latin = _automaton(latin)
        self._latin_longest = max(map(len, latin), default=0)
        self._vocabulary = frozenset(word for key in latin for word in key.split())
        self._han = _automaton(han)
        self._han_longest = max(map(len, han), default=0)
        counts: dict[str, int] = {}
        for lang, table in data.items():
            if lang not in ("fold", "allow"):
                for category, items in table.items():
                    counts[f"{category}:{lang}"] = sum(1 for item in items if str(item).strip())
        self._counts: Mapping[str, int] = counts
        self._categories = tuple(dict.fromkeys(key.split(":")[0] for key in counts))

    @classmethod
    def load(cls, path: Path | None = None) -> Lexicon:
        """Compile a lexicon file; ``None`` means the bundled ``safety/data/lexicon.toml``."""
        return cls.from_toml((path or DEFAULT_LEXICON_FILE).read_text(encoding="utf-8"))

    @classmethod
    def from_toml(cls, text: str) -> Lexicon:
        """Compile a lexicon from the text of a lexicon file (format: see the bundled one)."""
        return cls(tomllib.loads(text))

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories of the entries, in the order the file lists them."""
        return self._categories

    @property
    def counts(self) -> Mapping[str, int]:
        """Number of entries per ``category:lang`` (an entry with alternatives counts once)."""
        return self._counts

    def find(self, text: str, normalized: Normalized | None = None) -> list[Finding]:
        """Every lexicon term in ``text``, sorted by start, with spans in ``text``.

        ``normalized`` is ``normalize(text)`` where the caller has it already.
        """
        if not text:
            return []
        skeleton = normalized or normalize(text)
        return self._findings(skeleton, self._read_words(skeleton.text))

    def pending_start(self, text: str, normalized: Normalized | None = None) -> int:
        """Where a term could still begin once more text follows ``text``; ``len(text)`` if nowhere.

        For a streaming filter: everything before this index can be judged now (``find``), the rest may
        yet turn into a term, or out of one. Conservative: the last word (it may go on), trailing
        single letters (they may go on to spell a word, "f u c"), trailing words that begin an entry
        ("pipe" of "pipe bomb"), and trailing Chinese characters that begin an entry.
        """
        skeleton = normalized or normalize(text)
        return self._pending_start(text, skeleton, self._read_words(skeleton.text))

    def scan(self, text: str, normalized: Normalized | None = None) -> tuple[list[Finding], int]:
        """``find`` and ``pending_start`` together, reading the words once: a streaming filter's check."""
        skeleton = normalized or normalize(text)
        words = self._read_words(skeleton.text)
        findings = self._findings(skeleton, words) if text else []
        return findings, self._pending_start(text, skeleton, words)

    def _read_words(self, text: str) -> _Words | None:
        """The words and the word stream of a skeleton, for the Latin entries (None if there are none)."""
        if self._latin is None:
            return None
        words = _words(text, self._vocabulary)
        return _Words(words, _word_stream(text, self._vocabulary, words))

    def _findings(self, skeleton: Normalized, words: _Words | None) -> list[Finding]:
        latin = self._scan_words(words.stream, skeleton) if words is not None else iter(())
        hits = _keep_allowed(list(latin) + list(self._han_hits(skeleton)))
        findings = [Finding("lexicon", p.category or "", p.rule, start, end) for p, start, end in hits]
        return _longest_per_category(findings)

    def _pending_start(self, text: str, skeleton: Normalized, words: _Words | None) -> int:
        latin = self._latin_pending(skeleton.text, words) if words is not None else iter(())
        starts = [*latin, *self._han_pending(skeleton.text)]
        if not starts:
            return len(text)
        return skeleton.origin[min(starts)]

    def _latin_pending(self, text: str, read: _Words) -> Iterator[int]:
        """Skeleton indices where a Latin term may begin, given more text."""
        assert self._latin is not None
        if not text:
            return
        if tail := _TRAILING_SEGMENT.search(text):
            yield tail.start()  # the word goes on, or its reading may still change ("sh1" + "t")
        words, stream = read.words, read.stream
        i = len(words)
        gap = text[words[-1][1] + len(words[-1][0]) :] if words else ""
        while i and len(word := words[i - 1][0]) == 1 and "a" <= word <= "z" and (not gap or _glue_kind(gap)):
            i -= 1
            gap = text[words[i - 1][1] + len(words[i - 1][0]) : words[i][1]] if i else ""
        if i < len(words):
            yield words[i][1]  # single letters that may go on spelling a word
        complete = tail is None
        words_end = len(stream.text) if complete else stream.text.rfind(" ") + 1
        # A last word of two or more plain letters can only grow, so an entry that goes on through it
        # must begin with it as far as it has come ("i'm" + "sorr" begins no "i'm going to ...").
        growing = tail is not None and _growing_word(words, tail.start(), len(text))
        probe_end = len(stream.text) if growing else words_end
        for p in range(max(0, words_end - self._latin_longest), words_end):
            if (p == 0 or stream.text[p - 1] == " ") and stream.first[p] >= 0:
                probe = stream.text[p:probe_end] + (" " if complete else "")
                if self._latin.match(probe):
                    yield stream.first[p]  # complete words that begin a longer entry

    def _han_pending(self, text: str) -> Iterator[int]:
        """Skeleton indices where a Chinese term may begin, given more text."""
        if self._han is None or not _HAN.search(text):
            return
        positions = [m.start() for m in _ALNUM.finditer(text)]
        kept = _SEPARATORS.sub("", text).translate(self._fold)
        for size in range(min(len(kept), self._han_longest), 0, -1):
            if self._han.match(kept[-size:]):
                yield positions[len(kept) - size]
                return

    def _scan_words(self, stream: _WordStream, skeleton: Normalized) -> Iterator[_Hit]:
        text, run, glued = stream.text, stream.run, stream.glued
        size = len(text)
        for end, patterns in self._latin.iter(text):
            after = end + 1
            if after < size and text[after] != " " and after not in glued:
                continue  # the hit ends inside a word
            for pattern in patterns:
                start = after - pattern.length
                if start and text[start - 1] != " " and start not in glued:
                    continue  # it starts inside a word
                if not all(
                    got == want or got >= max(3, want)
                    for got, want in zip(run[start:after], pattern.runs, strict=True)
                ):
                    continue  # a letter repeats as often as in the entry, or is stretched to 3+
                yield (pattern, *skeleton.span(stream.first[start], stream.last[end] + 1))

    def _han_hits(self, skeleton: Normalized) -> Iterator[_Hit]:
        text = skeleton.text
        if self._han is None or not _HAN.search(text):
            return
        kept = _SEPARATORS.sub("", text).translate(self._fold)
        positions: list[int] = []
        for end, patterns in self._han.iter(kept):
            if not positions:
                positions = [m.start() for m in _ALNUM.finditer(text)]
            for pattern in patterns:
                start = end - pattern.length + 1
                first, last = positions[start], positions[end]
                if pattern.open_start and first and text[first - 1].isascii() and text[first - 1].isalnum():
                    continue
                if (
                    pattern.open_end
                    and last + 1 < len(text)
                    and text[last + 1].isascii()
                    and text[last + 1].isalnum()
                ):
                    continue
                yield (pattern, *skeleton.span(first, last + 1))
