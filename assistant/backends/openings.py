"""Draft tokens for the start of an answer: how earlier answers after the same system instruction began.

A support assistant's answers open alike ("I'm so sorry to hear that", "I'm sorry for any confusion"),
and the first words are the ones a reader waits for: the output filter holds "I" and "I'm" back until
the next word's first letters rule out a lexicon entry that begins with them. So the batcher appends
a draft of the likely opening to a request's prompt (unless it has a seed) when it prefills it, and
checks the draft in the same forward pass: the logits at each drafted position say what the model
would have chosen there, and the draft counts up to its first token that differs (speculative
decoding, with earlier answers as the draft model). A request whose opening is drafted right has
several tokens after its first pass instead of one; a wrong draft costs only its tokens' share of
that pass.

``Openings`` keeps, per shared prefix, how often each opening (the first ``DEPTH`` tokens of an
answer) was seen, and drafts the most common path through them: at each position the token most of the
openings that agree so far continue with, while at least ``MIN_SEEN`` of them do.
"""

from __future__ import annotations

import collections

__all__ = ["DEPTH", "MIN_SEEN", "Openings"]

#: Tokens of an answer's opening that are kept and drafted.
DEPTH = 8
#: Earlier answers that must agree on a drafted token.
MIN_SEEN = 2


class Openings:
    """Answer openings seen after each of the ``prefixes`` most recently used shared prefixes, at most
    ``per_prefix`` different ones each (the rarest half goes when there are more)."""

    def __init__(self, prefixes: int = 8, per_prefix: int = 256) -> None:
        self.prefixes, self.per_prefix = prefixes, per_prefix
        self._seen: collections.OrderedDict[tuple[int, ...], collections.Counter[tuple[int, ...]]] = (
            collections.OrderedDict()
        )

    def record(self, prefix: tuple[int, ...], answer: list[int]) -> None:
        """Count the opening of an answer given after ``prefix``."""
        seen = self._seen.setdefault(prefix, collections.Counter())
        self._seen.move_to_end(prefix)
        seen[tuple(answer[:DEPTH])] += 1
        if len(seen) > self.per_prefix:
            for opening, _ in seen.most_common()[self.per_prefix // 2 :]:
                del seen[opening]
        while len(self._seen) > self.prefixes:
            self._seen.popitem(last=False)

    def draft(self, prefix: tuple[int, ...], limit: int = DEPTH) -> list[int]:
        """The likely opening of the next answer after ``prefix``, at most ``limit`` tokens (may be none)."""
        candidates = list(self._seen.get(prefix, {}).items())
        drafted: list[int] = []
        for position in range(min(limit, DEPTH)):
            votes: collections.Counter[int] = collections.Counter()
            for opening, count in candidates:
                if len(opening) > position:
                    votes[opening[position]] += count
            token, count = votes.most_common(1)[0] if votes else (0, 0)
            if count < MIN_SEEN:
                break
            drafted.append(token)
            candidates = [(o, c) for o, c in candidates if len(o) > position and o[position] == token]
        return drafted
