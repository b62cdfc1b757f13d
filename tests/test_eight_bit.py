"""8-bit linear layers: found only where the weights are exactly Q8_0's ``scale * code``, and computed, group
by group, as the full layer is (in bfloat16 or float32). The default model's own output layer is one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from assistant.backends.eight_bit import GROUP, MAX_KERNEL_ROWS, EightBitLinear, eight_bit_grid, use_eight_bit


def grid_weight(outputs: int = 64, inputs: int = 4 * GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 weight that is ``scale * code`` per group of inputs, as a Q8_0 GGUF's expands to."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(-127, 128, (outputs, inputs), generator=generator)
    codes[:, ::GROUP] = 127 * (1 - 2 * torch.randint(0, 2, (outputs, inputs // GROUP), generator=generator))
    scales = torch.randint(1, 512, (outputs, inputs // GROUP, 1), generator=generator) / 65536
    return (codes.view(outputs, -1, GROUP) * scales).view(outputs, inputs), codes


def test_the_grid_of_an_8bit_weight_is_found_exactly() -> None:
    weight, codes = grid_weight()
    grid = eight_bit_grid(weight)
    assert grid is not None
    found, scales = grid
    assert torch.equal(found, codes.to(torch.int8))
    assert scales.shape == (64, 4)


def test_weights_off_an_8bit_grid_are_left_alone() -> None:
    weight, _ = grid_weight()
    tuned = weight.clone()
    tuned[3, 5] += 1e-5
    assert eight_bit_grid(tuned) is None
    assert eight_bit_grid(torch.randn(8, 4 * GROUP)) is None
    assert eight_bit_grid(weight[:, :40].contiguous()) is None  # inputs not a multiple of the group

    on_grid, off_grid = nn.Linear(4 * GROUP, 64, bias=False), nn.Linear(4 * GROUP, 64, bias=False)
    with torch.no_grad():
        on_grid.weight.copy_(weight)
        off_grid.weight.copy_(tuned)
    model = nn.Sequential(on_grid, off_grid)
    assert use_eight_bit(model) == 1
    assert isinstance(model[0], EightBitLinear) and type(model[1]) is nn.Linear


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, MAX_KERNEL_ROWS, MAX_KERNEL_ROWS + 1])
def test_an_8bit_layer_computes_what_the_full_layer_does(rows: int, dtype: torch.dtype) -> None:
    weight, _ = grid_weight()
    linear = nn.Linear(4 * GROUP, 64)
    with torch.no_grad():
        linear.weight.copy_(weight)
    grid = eight_bit_grid(weight)
    assert grid is not None
    eight_bit = EightBitLinear(linear, *grid).to(dtype)  # the scales stay as made
    linear = linear.to(dtype)
    x = torch.randn(1, rows, 4 * GROUP).to(dtype)
    with torch.inference_mode():
        expected, got = linear(x).float(), eight_bit(x)
    assert got.shape == (1, rows, 64) and got.dtype == dtype
    got = got.float()
    if rows > MAX_KERNEL_ROWS:
        assert torch.equal(got, expected)  # many rows: the full weight itself
    else:  # the 8-bit kernel: the same weights, inputs and scales rounded to bfloat16
        assert torch.allclose(got, expected, rtol=0.02, atol=0.02 * float(expected.abs().max()))
        assert not torch.equal(got, torch.zeros_like(got))
