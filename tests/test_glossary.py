"""The glossary rewriter: one-shot rules, and streaming equal to one-shot for any split."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety.glossary import Glossary

TERMS = {"refund": "credit", "refund policy": "returns guide", "cheap": "affordable", "e-mail": "email"}


def stream_rewrite(glossary: Glossary, pieces: list[str]) -> tuple[str, int]:
    stream = glossary.stream()
    out = "".join(stream.feed(p) for p in pieces) + stream.flush()
    return out, stream.rewrites


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I want a refund.", "I want a credit."),
        ("Refund now", "Credit now"),
        ("REFUND NOW", "CREDIT NOW"),
        ("rEfUnD", "credit"),
        ("refunds and prefund stay", "refunds and prefund stay"),  # word boundaries
        ("read the refund policy first", "read the returns guide first"),  # longest wording wins
        ("Refund\npolicy", "Returns guide"),  # a space in a wording matches any one whitespace
        ("cheap, cheaper, cheapest", "affordable, cheaper, cheapest"),
        ("send an e-mail", "send an email"),
        ("", ""),
    ],
)
def test_rewrite(text: str, expected: str) -> None:
    assert Glossary(TERMS).rewrite(text)[0] == expected


def test_rewrite_counts_replacements() -> None:
    assert Glossary(TERMS).rewrite("refund, Refund and the refund policy")[1] == 3


@pytest.mark.parametrize(
    "text", ["I want a refund.", "the refund policy", "REFUND policy, cheap e-mail", "refunds"]
)
def test_stream_equals_one_shot_for_every_split(text: str) -> None:
    glossary = Glossary(TERMS)
    expected = glossary.rewrite(text)
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert stream_rewrite(glossary, [text[:i], text[i:j], text[j:]]) == expected, (i, j)


def test_stream_one_character_at_a_time() -> None:
    glossary = Glossary(TERMS)
    text = "Our Refund Policy: no refund for cheap items; e-mail us."
    assert stream_rewrite(glossary, list(text)) == glossary.rewrite(text)


def test_stream_holds_back_at_most_the_longest_wording() -> None:
    glossary = Glossary(TERMS)
    stream = glossary.stream()
    released = stream.feed("x" * 100)
    assert len(released) == 100 - glossary.hold_back == 100 - len("refund policy")


def test_empty_glossary_passes_text_through_at_once() -> None:
    stream = Glossary({}).stream()
    assert stream.feed("hello") == "hello"


def test_overlapping_wordings_leftmost_then_longest() -> None:
    glossary = Glossary({"credit card": "card", "card number": "PAN", "card": "plastic"})
    assert glossary.rewrite("credit card number")[0] == "card number"
    assert stream_rewrite(glossary, ["credit ca", "rd num", "ber"])[0] == "card number"


alphabet = st.sampled_from(list("refund policy cheapRFP-e-mail.\n"))


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet, max_size=60), cuts=st.lists(st.integers(0, 60), max_size=6))
def test_stream_equals_one_shot_property(text: str, cuts: list[int]) -> None:
    glossary = Glossary(TERMS)
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert stream_rewrite(glossary, pieces) == glossary.rewrite(text)
