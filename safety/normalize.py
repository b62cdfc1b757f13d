"""Text normalization for matching: a folded "skeleton" of a text plus a map back to the original.

``normalize(text)`` works character by character. Each character of the input becomes zero, one or
several characters of the skeleton, and every skeleton character remembers the index of the input
character it came from (``Normalized.origin``), so a match found in the skeleton can be reported,
and masked, as a span of the original string.

What is folded, in this order, for each input character:

1. invisible and format characters are dropped: zero-width spaces and joiners, bidi controls, the
   soft hyphen, word joiners, the BOM, Unicode tag characters, variation selectors, Hangul fillers,
   control characters other than whitespace; blanks that NFKC keeps (the braille blank, the Hangul
   filler) become a space;
2. Unicode NFKC (fullwidth ``ｆ`` -> ``f``, ligatures ``ﬁ`` -> ``fi``, circled and mathematical
   letters, CJK compatibility ideographs);
3. look-alike letters from other scripts (Cyrillic ``а е о р с``, Greek ``α ο ρ ν``, small capitals,
   ``ø ł đ ı`` ...) become the Latin letter they imitate (``homoglyphs=True``);
4. case folding (``fold_case=True``);
5. combining marks are removed (``strip_marks=True``): ``fück`` -> ``fuck``, and stacked "Zalgo"
   marks vanish;
6. optionally (``leet=True``) leetspeak digits and symbols become letters, context-free: ``0`` ->
   ``o``, ``1`` -> ``i``, ``3`` -> ``e``, ``4`` -> ``a``, ``5`` -> ``s``, ``7`` -> ``t``, ``@`` ->
   ``a``, ``$`` -> ``s``, ``!`` -> ``i`` ... Callers that need context (is ``1`` a digit of a number
   or a letter of a word?) leave it off and use ``LEET`` themselves.

Per-character results are cached, so normalizing text made of already seen characters costs a
dictionary look-up per character; ASCII-only text takes a fast path with an identity origin map.
"""

# The look-alike letters below are the point of this module, hence:
# ruff: noqa: RUF001, RUF002, RUF003

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "HOMOGLYPHS",
    "LEET",
    "LEET_ALTERNATIVES",
    "Normalized",
    "is_invisible",
    "normalize",
]

#: Characters dropped although their Unicode category is not "Cf" (format).
_INVISIBLE_EXTRA = frozenset(
    "\u034f"  # combining grapheme joiner
    "\u115f\u1160\uffa0"  # Hangul fillers (letters that render as nothing)
    "\u180b\u180c\u180d\u180f"  # Mongolian free variation selectors
)
#: Blank characters that NFKC keeps but that stand for a space.
_BLANKS = frozenset("\u2800\u3164")  # braille blank, Hangul filler used as a space
_WHITESPACE_CONTROLS = frozenset("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85")


def is_invisible(char: str) -> bool:
    """True for a character that renders as nothing and can be hidden inside a word."""
    code = ord(char)
    if 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF or 0xE0000 <= code <= 0xE007F:
        return True  # variation selectors and tag characters
    if char in _INVISIBLE_EXTRA:
        return True
    category = unicodedata.category(char)
    return category == "Cf" or (category == "Cc" and char not in _WHITESPACE_CONTROLS)


def _pairs(spec: str) -> dict[str, str]:
    """``"аa еe"`` -> ``{"а": "a", "е": "e"}``: each space-separated item is a char and its target."""
    return {item[0]: item[1:] for item in spec.split()}


#: Look-alike letters of other scripts and Latin variants, mapped to the ASCII letter they imitate.
#: Both cases are listed because the visual match differs by case (Greek ``ν`` looks like ``v``,
#: its capital ``Ν`` like ``N``). Applied before case folding.
HOMOGLYPHS: Mapping[str, str] = _pairs(
    # Cyrillic, lower case
    "аa вb еe ёe гr һh іi їi јj кk ӏl мm нh оo рp пn сc тt уy ўy хx ѕs ԁd ԛq ԝw ѡw ьb ɡg "
    # Cyrillic, capitals
    "АA ВB ЕE ЁE ЅS ІI ЇI ЈJ КK МM НH ОO РP СC ТT УY ХX ԀD ԚQ ԜW ӀI "
    # Greek, lower case
    "αa βb γy εe ηn ιi κk μu νv οo ρp σo τt υu χx ωw ϲc ϳj "
    # Greek, capitals
    "ΑA ΒB ΕE ΖZ ΗH ΙI ΚK ΜM ΝN ΟO ΡP ΤT ΥY ΧX ϹC ϿJ "
    # Armenian
    "հh ոn սu օo ցg զq "
    # Latin variants and small capitals
    "ıi ȷj ɑa ɩi ɪi ʀr ʏy ʙb ʜh ɴn ʟl ɢg ᴀa ᴄc ᴅd ᴇe ᴊj ᴋk ᴍm ᴏo ᴘp ᴛt ᴜu ᴠv ᴡw ᴢz ꜱs ꜰf "
    "øo ØO łl ŁL đd ĐD ħh ĦH ŧt ŦT ƒf ǀl ɵo ĸk ɾr"
) | {
    # negative squared and negative circled capitals (🅰 🅐), which NFKC leaves alone
    **{chr(0x1F170 + i): chr(ord("A") + i) for i in range(26)},
    **{chr(0x1F150 + i): chr(ord("A") + i) for i in range(26)},
}

#: Leetspeak: digits and symbols used in place of letters (first reading).
LEET: Mapping[str, str] = _pairs("0o 1i 3e 4a 5s 7t 8b 9g @a $s !i ¡i |l +t €e ¢c")

#: Second readings of ambiguous leet characters (``k1ll`` is "kill", ``sh1t`` is "shit").
LEET_ALTERNATIVES: Mapping[str, str] = _pairs("1l |i")


@dataclass(frozen=True, slots=True)
class Normalized:
    """A normalized text and, for each of its characters, the index of the original character."""

    text: str
    origin: Sequence[int]
    source_length: int  # length of the original text

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span that the normalized span ``[start, end)`` came from.

        It also covers the dropped characters right after it (zero-width characters, combining
        marks), so that masking the span leaves none of the word behind.
        """
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"bad span {start}:{end} of {len(self.text)} characters")
        after = self.origin[end] if end < len(self.origin) else self.source_length
        return self.origin[start], max(after, self.origin[end - 1] + 1)


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    if len(kept) == len(decomposed):
        return text  # nothing to strip: keep precomposed forms (Hangul syllables stay whole)
    return unicodedata.normalize("NFC", kept)


def _fold_char(char: str, options: tuple[bool, bool, bool, bool]) -> str:
    fold_case, strip_marks, homoglyphs, leet = options
    if char in _BLANKS:
        return " "
    if is_invisible(char):
        return ""
    text = unicodedata.normalize("NFKC", char)
    if homoglyphs:
        text = "".join(HOMOGLYPHS.get(c, c) for c in text)
    if fold_case:
        text = text.casefold()
    if strip_marks:
        text = _strip_marks(text)
    if leet:
        text = "".join(LEET.get(c, c) for c in text)
    return "".join(c for c in text if not is_invisible(c))


_CACHE_LIMIT = 50_000  # distinct characters remembered per option set
_caches: dict[tuple[bool, bool, bool, bool], dict[str, str]] = {}


def normalize(
    text: str,
    *,
    fold_case: bool = True,
    strip_marks: bool = True,
    homoglyphs: bool = True,
    leet: bool = False,
) -> Normalized:
    """Fold ``text`` for matching; ``origin[i]`` is the index in ``text`` of normalized char ``i``."""
    options = (fold_case, strip_marks, homoglyphs, leet)
    cache = _caches.setdefault(options, {})
    local: dict[str, str] = {}
    for char in set(text):
        folded = cache.get(char)
        if folded is None:
            folded = _fold_char(char, options)
            if len(cache) < _CACHE_LIMIT:
                cache[char] = folded
        local[char] = folded
    parts = list(map(local.__getitem__, text))
    folded_text = "".join(parts)
    if len(folded_text) == len(text) and all(len(f) == 1 for f in local.values()):
        return Normalized(folded_text, range(len(text)), len(text))
    origin = [index for index, part in enumerate(parts) for _ in part]
    return Normalized(folded_text, origin, len(text))
