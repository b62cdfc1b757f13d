"""Drafts of answer openings (``openings``), and sampling with a draft token keeping each token's
probability."""

from __future__ import annotations

import collections

import torch

from assistant.backends.base import GenerationOptions
from assistant.backends.batching import _sample
from assistant.backends.openings import DEPTH, Openings

PREFIX = (1, 2, 3)


def test_the_draft_follows_the_path_most_earlier_openings_agree_on() -> None:
    openings = Openings()
    for answer, times in (([10, 11, 12, 13], 2), ([10, 11, 14], 3), ([20], 1)):
        for _ in range(times):
            openings.record(PREFIX, answer)
    assert openings.draft(PREFIX) == [10, 11, 14]  # 14 (3 answers) over 12 (2), then nothing after it
    assert openings.draft(PREFIX, limit=1) == [10]
    assert openings.draft((9,)) == []  # another prefix: nothing seen


def test_a_token_only_one_earlier_answer_had_is_not_drafted() -> None:
    openings = Openings()
    openings.record(PREFIX, [10, 11])
    assert openings.draft(PREFIX) == []
    openings.record(PREFIX, [10, 12])
    assert openings.draft(PREFIX) == [10]  # the two agree on the first token only


def test_only_the_first_depth_tokens_are_kept() -> None:
    openings = Openings()
    for _ in range(2):
        openings.record(PREFIX, list(range(100, 100 + 3 * DEPTH)))
    assert openings.draft(PREFIX) == list(range(100, 100 + DEPTH))


def test_openings_are_bounded_per_prefix_and_in_prefixes() -> None:
    openings = Openings(prefixes=2, per_prefix=4)
    for _ in range(3):
        openings.record(PREFIX, [7])
    for token in range(4):
        openings.record(PREFIX, [token])  # the fifth different opening: the rarest half goes
    assert len(openings._seen[PREFIX]) == 2 and openings._seen[PREFIX][(7,)] == 3
    openings.record((4,), [1])
    openings.record((5,), [1])  # a third prefix: the least recently used one goes
    assert list(openings._seen) == [(4,), (5,)]


def test_sampling_with_a_draft_gives_each_token_its_own_probability() -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, 0.0])
    options = GenerationOptions(max_tokens=1, temperature=0.8, top_p=0.95)
    probabilities = torch.softmax(logits / 0.8, dim=0)
    assert probabilities[3] < 1 - 0.95 < probabilities[3] + probabilities[4]  # top-p leaves token 3 out
    probabilities[3] = 0
    probabilities /= probabilities.sum()
    generator, draws = torch.Generator().manual_seed(1), 10000
    for draft in (None, 0, 2, 3):  # none, the likeliest token, a less likely one, one outside top-p
        drawn = collections.Counter(_sample(logits, options, generator, draft) for _ in range(draws))
        for token, probability in enumerate(probabilities.tolist()):
            assert abs(drawn[token] / draws - probability) < 0.02, (draft, token, drawn)
