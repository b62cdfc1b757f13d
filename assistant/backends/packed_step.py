"""One forward pass for a decoding step and the prompts that join the batch at it.

A forward pass of the default model costs about as much again in fixed work (thirty layers of small
operations and their Python) as in per-token work on this project's 2-core CPU, so prefilling newly
admitted prompts in a pass of their own, then decoding the running rows in another, pays that fixed
part twice. A packed step lays every token of both out in one sequence: the running rows' last tokens,
then each joining group's rows (left-padded to one width, as a separate prefill would have them). The
linear layers see one batch of tokens; only attention needs each segment apart, and ``attention`` does
that: it cuts the segment's queries, keys and values out of the sequence, appends the keys and values
to the segment's own cache and attends with the segment's own mask.

``packed(segments)`` marks the forward passes run inside it, on this thread, as packed steps;
``cpu_attention`` then hands their attention to ``attention``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward

__all__ = ["Segment", "active", "attention", "causal_after_prefix", "packed"]


@dataclass(frozen=True)
class Segment:
    """``rows`` times ``width`` consecutive tokens of the packed sequence (row after row), with the cache
    their keys and values go to and their boolean mask ``[rows, 1, width, positions]`` over it."""

    rows: int
    width: int
    cache: DynamicCache
    mask: torch.Tensor


_active = threading.local()


@contextlib.contextmanager
def packed(segments: list[Segment]) -> Iterator[None]:
    """Run the forward passes inside as packed steps made of ``segments`` (on this thread)."""
    _active.segments = segments
    try:
        yield
    finally:
        _active.segments = None


def causal_after_prefix(mask: torch.Tensor, shared: int) -> torch.Tensor:
    """The 4-D mask of rows that are a shared prefix then their own left-padded tokens, from their
    padding mask ``[rows, shared + width]``: each token sees the prefix and its row's tokens up to itself."""
    positions = mask.shape[1]
    width = positions - shared
    causal = torch.ones((width, positions), dtype=torch.bool).tril(diagonal=shared)
    return mask.bool()[:, None, None, :] & causal


def active() -> list[Segment] | None:
    """The segments of the packed step running on this thread, if one is."""
    segments: list[Segment] | None = getattr(_active, "segments", None)
    return segments


def attention(
    segments: list[Segment],
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A packed step's attention (``[1, heads, tokens, head_dim]`` in, ``[1, tokens, heads, head_dim]``
    out), segment by segment; each segment's new keys and values go to its cache."""
    outputs, start = [], 0
    for segment in segments:
        layer = segment.cache.layers[cast(int, module.layer_idx)]
        keys, values = layer.update(_cut(key, start, segment), _cut(value, start, segment))  # type: ignore[union-attr]
        query_rows = _cut(query, start, segment)
        output, _ = sdpa_attention_forward(module, query_rows, keys, values, segment.mask, **kwargs)
        outputs.append(output.reshape(1, segment.rows * segment.width, *output.shape[2:]))
        start += segment.rows * segment.width
    return torch.cat(outputs, dim=1), None


def _cut(states: torch.Tensor, start: int, segment: Segment) -> torch.Tensor:
    """A segment's part of ``[1, heads, tokens, head_dim]`` as ``[rows, heads, width, head_dim]``."""
    heads, _, head_dim = states.shape[1:]
    part = states[0, :, start : start + segment.rows * segment.width]
    return part.reshape(heads, segment.rows, segment.width, head_dim).transpose(0, 1)
