"""Attention for decoding steps on the CPU: transformers' own sdpa, kept on its fast path.

For one new token per row and grouped-query heads (SmolLM2: 9 query heads share 3 key/value heads),
transformers' sdpa function folds the query heads of each key/value head into one matrix when the
batch comes with an attention mask, and asks torch for ``enable_gqa`` when it comes without one (no
padding: one request alone, or rows of one length). On the CPU in bfloat16 the second path is several
times slower: on this project's 2-core machine, per layer, 0.22 against 0.05 ms for one row over 460
positions and 1.80 against 0.22 ms for 8 rows (30 layers per token). ``decode_sdpa`` hands such a step
a mask that lets every position through, so it takes the first path; everything else is transformers'
sdpa unchanged. In a packed step (``packed_step``: the batcher's decoding rows and joining prompts in
one forward pass) attention goes segment by segment, ``packed_step.attention``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from assistant.backends import packed_step

__all__ = ["NAME", "cpu_attention", "cpu_mask", "decode_sdpa", "register"]

NAME = "sdpa_cpu_decode"


def decode_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if attention_mask is None and query.shape[2] == 1 and getattr(module, "num_key_value_groups", 1) > 1:
        attention_mask = torch.ones((1, 1, 1, key.shape[2]), dtype=torch.bool, device=query.device)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def cpu_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if (segments := packed_step.active()) is not None:
        return packed_step.attention(segments, module, query, key, value, **kwargs)
    return decode_sdpa(module, query, key, value, attention_mask, **kwargs)


def cpu_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """sdpa's mask; none in a packed step, whose segments bring their own (the model's would be a
    [tokens, tokens] mask over the whole packed sequence, built for nothing)."""
    return None if packed_step.active() is not None else sdpa_mask(*args, **kwargs)


def register() -> str:
    """Make ``NAME`` an attention implementation (with sdpa's masks); returns it."""
    AttentionInterface.register(NAME, cpu_attention)
    AttentionMaskInterface.register(NAME, cpu_mask)
    return NAME
