"""The decoding attention computes what transformers' sdpa computes, and the backend's model uses it."""

from __future__ import annotations

import pytest
import torch
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
