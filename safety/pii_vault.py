"""The per-request PII vault: values swapped for placeholders on the way in, restored on the way out.

``PiiVault.protect`` replaces each PII span by ``[CATEGORY_n]`` (``[EMAIL_1]``, ``[PHONE_2]``,
``[CN_ID_1]``): the same value always gets the same placeholder, a new one the next number of its
category. A number whose placeholder already stood in a text this vault protected is skipped, so what
a user typed is not mistaken for an issued placeholder. ``PiiVault.restore`` puts the values back,
also where the model changed the placeholder's case (``[email_1]``); anything shaped like a
placeholder that this vault did not issue (``[EMAIL_9]``) passes through unchanged.

``PlaceholderStream`` (from ``PiiVault.restorer()``) does the same to text arriving in pieces. It holds
back only a tail that could still grow into an issued placeholder: from the last ``[`` on, while that
tail is a proper prefix of one (in any case). So it never holds more than ``hold_back`` characters,
one less than the longest issued placeholder, nothing at all while the vault is empty, and its output
equals ``restore`` of the whole text however the text is split.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safety.findings import Finding

# Any "[word]": looked up among the issued placeholders; one not issued is left as it is.
_PLACEHOLDER_SHAPE = re.compile(r"\[[A-Za-z0-9_]+\]")
_NOT_NAME = re.compile(r"[^A-Z]+")


class PiiVault:
    """Per request: same value -> same placeholder; restores only what it issued."""

    def __init__(self) -> None:
        self._issued: dict[tuple[str, str], str] = {}  # (category, value) -> placeholder
        self._values: dict[str, str] = {}  # placeholder (upper case) -> value
        self._prefixes: set[str] = set()  # proper prefixes of the issued placeholders
        self._counts: dict[str, int] = {}  # category name -> last number issued
        self._seen: set[str] = set()  # placeholder-shaped text met in protected texts (upper case)

    @property
    def longest_placeholder(self) -> int:
        """Length of the longest placeholder issued so far (0 while none)."""
        return max(map(len, self._values), default=0)

    def protect(self, text: str, findings: list[Finding] | None = None) -> str:
        """``text`` with each finding's span replaced by its placeholder (by default: ``find_pii``).

        Spans index ``text``; a span overlapping one already replaced (by start, longest first) is
        skipped.
        """
        if findings is None:
            from safety.pii import find_pii  # safety.pii imports this module

            findings = find_pii(text)
        pieces: list[str] = []
        position = 0
        self._seen.update(m.group().upper() for m in _PLACEHOLDER_SHAPE.finditer(text))
        for finding in sorted(findings, key=lambda f: (f.start, f.start - f.end)):
            if finding.start < position or finding.end <= finding.start:
                continue
            value = text[finding.start : finding.end]
            pieces += [text[position : finding.start], self._placeholder(finding.category, value)]
            position = finding.end
        pieces.append(text[position:])
        return "".join(pieces)

    def restore(self, text: str) -> str:
        """``text`` with every placeholder this vault issued (in any case) replaced by its value."""
        if not self._values:
            return text
        return _PLACEHOLDER_SHAPE.sub(lambda m: self._values.get(m.group().upper(), m.group()), text)

    def restorer(self) -> PlaceholderStream:
        """A stream restoring this vault's placeholders, also those split across pieces."""
        return PlaceholderStream(self)

    def could_grow_into_placeholder(self, tail: str) -> bool:
        """Whether ``tail`` (any case) is a proper prefix of an issued placeholder."""
        return tail.upper() in self._prefixes

    def _placeholder(self, category: str, value: str) -> str:
        key = (category, value)
        if key not in self._issued:
            self._issued[key] = self._issue(category, value)
        return self._issued[key]

    def _issue(self, category: str, value: str) -> str:
        name = _NOT_NAME.sub("_", category.upper()).strip("_") or "PII"
        while True:
            self._counts[name] = self._counts.get(name, 0) + 1
            placeholder = f"[{name}_{self._counts[name]}]"
            if placeholder not in self._seen:
                break
        self._values[placeholder] = value
        self._prefixes.update(placeholder[:i] for i in range(1, len(placeholder)))
        return placeholder


class PlaceholderStream:
    """Restores placeholders in text that arrives in pieces; a placeholder split across pieces is still
    restored. At most ``hold_back`` characters are held back at any time."""

    def __init__(self, vault: PiiVault) -> None:
        self._vault = vault
        self._buffer = ""

    @property
    def hold_back(self) -> int:
        """The most characters ever held back: one less than the longest issued placeholder."""
        return max(self._vault.longest_placeholder - 1, 0)

    def feed(self, piece: str) -> str:
        """Accept a piece; return what can be released now, restored."""
        self._buffer += piece
        start = self._buffer.rfind("[")
        cut = start if start >= 0 and self._vault.could_grow_into_placeholder(self._buffer[start:]) else None
        return self._release(len(self._buffer) if cut is None else cut)

    def flush(self) -> str:
        """The end of the text: release everything held back."""
        return self._release(len(self._buffer))

    def _release(self, cut: int) -> str:
        released, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return self._vault.restore(released)
