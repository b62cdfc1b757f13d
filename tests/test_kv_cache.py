"""The batcher's KV cache layer holds what transformers' concatenating layer holds, step after step."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from assistant.backends.kv_cache import ROOM, GrowingLayer


def states(positions: int, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, positions, 4, generator=generator), torch.randn(
        batch, 2, positions, 4, generator=generator
    )


def test_steps_past_the_room_give_what_concatenation_gives() -> None:
    growing, concatenating = GrowingLayer(), DynamicLayer()  # type: ignore[no-untyped-call]
    for step, positions in enumerate([50, *[1] * (2 * ROOM)]):  # a prefill, then one position per step
        new = states(positions, seed=step)
        got, expected = growing.update(*new), concatenating.update(*new)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert growing.get_seq_length() == 50 + 2 * ROOM


def test_appending_writes_in_place_until_the_room_is_full() -> None:
    layer = GrowingLayer()
    keys, _ = layer.update(*states(10))
    start = keys.data_ptr()
    for step in range(ROOM):
        keys, _ = layer.update(*states(1, seed=step + 1))
    assert keys.data_ptr() == start  # no copy of the cache while there was room
    keys, _ = layer.update(*states(1, seed=99))
    assert keys.data_ptr() != start and keys.shape[2] == 10 + ROOM + 1


def test_a_cache_cut_by_transformers_helpers_goes_on_correctly() -> None:
    growing, concatenating = GrowingLayer(), DynamicLayer()  # type: ignore[no-untyped-call]
    for layer in (growing, concatenating):
        layer.update(*states(20))
        layer.crop(-5)  # keeps a view of the room
        layer.batch_select_indices(torch.tensor([2, 0]))  # makes new tensors
    new = states(3, batch=2, seed=7)
    got, expected = growing.update(*new), concatenating.update(*new)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
