"""The decoding attention computes what transformers' sdpa computes, and the backend's model uses it."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from assistant.backends import cpu_attention
from assistant.backends.hf import HFBackend, load_model


class GroupedAttention(torch.nn.Module):
    num_key_value_groups = 3
    is_causal = True


def heads(batch: int, positions: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(batch, 9, 1, 64, generator=generator)
    key, value = (torch.randn(batch, 3, positions, 64, generator=generator) for _ in range(2))
    return query.to(dtype), key.to(dtype), value.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 8])
def test_a_step_without_a_mask_computes_what_sdpa_computes(dtype: torch.dtype, batch: int) -> None:
    query, key, value = heads(batch, 200, dtype)
    module = GroupedAttention()
    expected, _ = sdpa_attention_forward(module, query, key, value, None, scaling=0.125)
    got, _ = cpu_attention.decode_sdpa(module, query, key, value, None, scaling=0.125)
    assert got.shape == expected.shape == (batch, 1, 9, 64)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(got.float(), expected.float(), atol=tolerance)


def test_a_step_with_a_mask_is_sdpa_unchanged() -> None:
    query, key, value = heads(4, 50, torch.float32)
    mask = torch.ones(4, 1, 1, 50, dtype=torch.bool)
    mask[:2, ..., :10] = False  # left padding of two rows
    module = GroupedAttention()
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.125)
    got, _ = cpu_attention.decode_sdpa(module, query, key, value, mask, scaling=0.125)
    assert torch.equal(got, expected)


@pytest.mark.model
def test_the_served_model_on_the_cpu_decodes_with_it(hf_backend: HFBackend) -> None:
    model, _ = load_model(hf_backend._model_source(), "float32")
    assert model.config._attn_implementation == cpu_attention.NAME


class LayerAttention(GroupedAttention):
    layer_idx = 0


def test_a_packed_step_attends_each_segment_over_its_own_cache() -> None:
    """Two segments laid out in one sequence (2 decoding rows, then 2 rows of 3 prompt tokens) give
    each segment's attention computed apart, and each segment's new keys and values join its cache."""
    from assistant.backends import packed_step
    from assistant.backends.kv_cache import growing_cache

    generator = torch.Generator().manual_seed(1)

    def states(rows: int, width: int, heads: int) -> torch.Tensor:
        return torch.randn(rows, heads, width, 64, generator=generator)

    config = LlamaConfig(num_hidden_layers=1)
    shapes = [(2, 1, 5), (2, 3, 4)]  # rows, width, cached positions
    layout = []
    for rows, width, cached in shapes:
        cache = growing_cache(config, [(states(rows, cached, 3), states(rows, cached, 3))])
        query, key, value = states(rows, width, 9), states(rows, width, 3), states(rows, width, 3)
        mask = torch.ones(rows, cached + width, dtype=torch.bool)
        mask[0, 0] = False  # the first row is left-padded
        mask4 = packed_step.causal_after_prefix(mask, cached)
        old_keys, old_values = cache.layers[0].keys, cache.layers[0].values
        assert old_keys is not None and old_values is not None
        full = (torch.cat([old_keys, key], dim=2), torch.cat([old_values, value], dim=2))
        expected, _ = sdpa_attention_forward(LayerAttention(), query, *full, mask4, scaling=0.125)
        layout.append((packed_step.Segment(rows, width, cache, mask4), query, key, value, expected, full))

    def packed(index: int) -> torch.Tensor:  # [rows, heads, width, 64] -> [1, heads, rows * width, 64]
        return torch.cat([part[index].transpose(0, 1).flatten(1, 2) for part in layout], dim=1)[None]

    segments = [part[0] for part in layout]
    got, _ = packed_step.attention(segments, LayerAttention(), packed(1), packed(2), packed(3), scaling=0.125)
    expected = torch.cat([part[4].flatten(0, 1) for part in layout])[None]  # [1, tokens, heads, 64]
    assert got.shape == (1, 2 + 6, 9, 64)
    assert torch.allclose(got, expected, atol=1e-6)
    for segment, *_, (keys, values) in layout:
        assert torch.equal(segment.cache.layers[0].keys, keys)
        assert torch.equal(segment.cache.layers[0].values, values)


def test_a_packed_step_builds_no_mask_for_the_whole_sequence() -> None:
    from assistant.backends import packed_step

    arguments = {"batch_size": 1, "q_length": 4, "kv_length": 4, "allow_is_causal_skip": False}
    assert cpu_attention.cpu_mask(**arguments) is not None  # sdpa's own, outside a packed step
    with packed_step.packed([]):
        assert cpu_attention.cpu_mask(**arguments) is None
    assert cpu_attention.cpu_mask(**arguments) is not None
