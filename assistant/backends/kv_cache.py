"""A KV cache for the batcher that appends a step's keys and values in place.

transformers' ``DynamicLayer`` concatenates each step's new keys and values onto the whole cache: every
cached position of every layer is copied at every step. On this project's 2-core CPU, at a batch of 8
with 400-token prompts, a decoding step took 83.2 ms with it and 74.7 ms with this layer (medians of
three alternating runs; at 60-token prompts the two tie). ``GrowingLayer`` keeps room for
``ROOM`` more positions and writes new ones into it; its ``keys`` and ``values`` are views of the filled
part, which attention reads as it reads a concatenated tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer

__all__ = ["ROOM", "GrowingLayer", "growing_cache"]

#: Positions of room allocated past the filled ones (each reallocation copies the cache once).
ROOM = 64


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A full-attention layer's keys and values ``[batch, heads, positions, head_dim]``, with room to grow."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._room: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        filled, new = self.get_seq_length(), key_states.shape[-2]
        room = self._room
        if room is None or not self._fits(room, filled + new):
            room = self._room = (
                self._grown(self.keys, key_states, filled),
                self._grown(self.values, value_states, filled),
            )
        room[0][:, :, filled : filled + new] = key_states
        room[1][:, :, filled : filled + new] = value_states
        self.keys, self.values = room[0][:, :, : filled + new], room[1][:, :, : filled + new]
        self.is_initialized, self.device = True, key_states.device
        return self.keys, self.values

    def _fits(self, room: tuple[torch.Tensor, torch.Tensor], positions: int) -> bool:
        """Whether the room holds ``positions`` and still backs ``keys`` and ``values`` (``crop`` keeps
        them views of it; ``batch_select_indices`` and ``reorder_cache`` make new tensors: start over)."""
        if positions > room[0].shape[-2]:
            return False
        if self.keys is None or self.values is None or self.keys.numel() == 0:
            return True
        return self.keys.data_ptr() == room[0].data_ptr() and self.values.data_ptr() == room[1].data_ptr()

    @staticmethod
    def _grown(old: torch.Tensor | None, new: torch.Tensor, filled: int) -> torch.Tensor:
        batch, heads, positions, head_dim = new.shape
        room = new.new_empty((batch, heads, filled + positions + ROOM, head_dim))
        if filled and old is not None:
            room[:, :, :filled] = old
        return room


def growing_cache(
    config: PretrainedConfig, layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None
) -> DynamicCache:
    """A ``DynamicCache`` of ``GrowingLayer``s, one per decoder layer, holding ``layers``' keys and values."""
    cache = DynamicCache(config=config)
    grown = [GrowingLayer() for _ in cache.layers]
    for layer, (keys, values) in zip(grown, layers or [], strict=False):
        layer.update(keys, values)
    cache.layers = list(grown)
    return cache
