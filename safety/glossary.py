"""Glossary ("terms") rewriting: wordings to avoid are replaced by the required wording.

Matching is case-insensitive and on word boundaries; the replacement follows the case of what it
replaces (``REFUND`` -> ``CREDIT``, ``Refund`` -> ``Credit``). Where wordings overlap, the leftmost
match wins and, at the same start, the longest. A space inside a wording matches exactly one
whitespace character, so every match is exactly as long as its wording.

``GlossaryStream`` applies the same rewrite to text that arrives in pieces, holding back at most
``Glossary.hold_back`` characters (the longest wording's length): the streamed result always equals
``Glossary.rewrite`` of the whole text, whatever the split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def _follow_case(source: str, replacement: str) -> str:
    letters = [c for c in source if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return replacement.upper()
    if letters and letters[0].isupper() and replacement:
        return replacement[0].upper() + replacement[1:]
    return replacement


def _wording_pattern(wording: str) -> str:
    return r"\s".join(re.escape(word) for word in wording.split(" "))


@dataclass(frozen=True)
class Glossary:
    terms: dict[str, str]
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _lookup: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        wordings = sorted(self.terms, key=len, reverse=True)
        alternatives = "|".join(_wording_pattern(w) for w in wordings)
        pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE) if wordings else None
        object.__setattr__(self, "_pattern", pattern)
        object.__setattr__(self, "_lookup", {self._key(w): r for w, r in self.terms.items()})

    @staticmethod
    def _key(text: str) -> str:
        return " ".join(text.split()).casefold()

    @property
    def hold_back(self) -> int:
        return max((len(w) for w in self.terms), default=0)

    def replacement(self, match: re.Match[str]) -> str:
        return _follow_case(match.group(), self._lookup[self._key(match.group())])

    def rewrite(self, text: str) -> tuple[str, int]:
        """``text`` with every avoided wording replaced, and the number of replacements."""
        if self._pattern is None:
            return text, 0
        return self._pattern.subn(self.replacement, text)

    def stream(self) -> GlossaryStream:
        return GlossaryStream(self)


@dataclass
class GlossaryStream:
    glossary: Glossary
    rewrites: int = 0
    _buffer: str = ""
    # One character already sent, kept so the word-boundary look-behind still sees it.
    _context: str = ""

    def feed(self, text: str) -> str:
        """Accept a piece of text; return what can be released now."""
        self._buffer += text
        return self._release(len(self._buffer) - self.glossary.hold_back)

    def flush(self) -> str:
        """The end of the text: release everything held back."""
        return self._release(len(self._buffer))

    def _release(self, safe_end: int) -> str:
        pattern = self.glossary._pattern
        if pattern is None:
            out, self._buffer = self._buffer, ""
            return out
        if safe_end <= 0:
            return ""
        text = self._context + self._buffer
        offset = len(self._context)
        pieces: list[str] = []
        position = offset
        for match in pattern.finditer(text, offset):
            # A match starting before safe_end ends inside the buffer: its right boundary is known.
            if match.start() >= safe_end + offset:
                break
            pieces += [text[position : match.start()], self.glossary.replacement(match)]
            self.rewrites += 1
            position = match.end()
        cut = max(position, safe_end + offset)
        pieces.append(text[position:cut])
        self._context = text[cut - 1 : cut]
        self._buffer = text[cut:]
        return "".join(pieces)
