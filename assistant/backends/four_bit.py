"""Linear layers whose weights are 4-bit numbers, multiplied as 4-bit numbers on the CPU.

The bundled model comes from a Q4_1 GGUF file: every weight of its linear layers is ``low + step * code``
with a 4-bit ``code`` and one ``low`` and ``step`` per group of 32 inputs. Expanded to bfloat16, a
decoding step reads 16 bits per weight; torch's 4-bit weight-only kernel for the CPU
(``_weight_int4pack_mm_for_cpu``) reads the 4-bit codes and their per-group scale and zero, the same
numbers. On this project's 2-core CPU a decoding step takes 12.4 ms against bfloat16's 22.0 at batch 1
and 24.0 against 31.4 ms at batch 8 (``bench/precision.py``). The kernel's scales and zeros are
bfloat16, so it is about as close to the float32 model as bfloat16 weights are: teacher-forced, its
most likely next token is float32's for 96.7% of 1,884 answer tokens (bfloat16: 97.1%).

A CPU without fast bfloat16 matrix products (AVX2 only: most laptops) serves in float32, and there the
kernel helps more: float32 weights are eight times the bytes of the codes. Its inputs are rounded to
bfloat16 for it, the rest of the model computes in float32. On a 2-core AVX2 EPYC a decoding step of
the default model took 59 ms against float32's 126 at batch 1, and 136 against 238 ms at batch 8.

The kernel wins where few rows are multiplied (decoding); with many rows (a prompt's prefill) the
bfloat16 (or float32) matrix product is faster, so each layer keeps that weight for those.

Only layers whose float32 weights lie exactly on such a grid are converted: a fine-tuned, merged model's
weights do not, and stay as they are. Nothing is quantized here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GROUP",
    "MAX_KERNEL_ROWS",
    "FourBitLinear",
    "four_bit_grid",
    "kernel_available",
    "replace_linears",
    "use_four_bit",
]

#: Inputs per scale and zero (Q4_1's block).
GROUP = 32
#: Up to this many rows the 4-bit kernel is the faster one here (they tie at about 32).
MAX_KERNEL_ROWS = 32
_INNER_K_TILES = 2


def kernel_available() -> bool:
    ops = torch.ops.aten
    return hasattr(ops, "_weight_int4pack_mm_for_cpu") and hasattr(ops, "_convert_weight_to_int4pack_for_cpu")


def four_bit_grid(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The 4-bit codes ``[out, in]`` and per-group ``(step, low)`` of a float32 weight ``[out, in]``
    that is exactly ``low + step * code`` in every group of ``GROUP`` inputs; None if it is not."""
    outputs, inputs = weight.shape
    if weight.dtype != torch.float32 or inputs % GROUP:
        return None
    groups = weight.view(outputs, inputs // GROUP, GROUP)
    low = groups.amin(dim=-1, keepdim=True)
    step = (groups.amax(dim=-1, keepdim=True) - low) / 15
    codes = ((groups - low) / torch.where(step > 0, step, 1.0)).round().clamp(0, 15)
    if not torch.equal(codes * step + low, groups):
        return None
    return codes.view(outputs, inputs).to(torch.int32), torch.cat([step, low], dim=-1)


class FourBitLinear(nn.Module):
    """``nn.Linear`` computed from 4-bit codes for few rows and from the full weight for many."""

    codes: torch.Tensor
    scale_bits: torch.Tensor

    def __init__(self, linear: nn.Linear, codes: torch.Tensor, step_low: torch.Tensor) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the same parameters: ties stay tied
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, _INNER_K_TILES)
        self.register_buffer("codes", packed, persistent=False)
        # The kernel computes (code - 8) * scale + zero, from bfloat16 scales and zeros [groups, out, 2].
        step, low = step_low.unbind(dim=-1)
        scales_and_zeros = torch.stack([step, low + 8 * step], dim=-1).transpose(0, 1).contiguous()
        # Kept as the bits of bfloat16 numbers: casting the model (to float32) leaves integers alone.
        bits = scales_and_zeros.to(torch.bfloat16).view(torch.int16)
        self.register_buffer("scale_bits", bits, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows > MAX_KERNEL_ROWS or x.dtype not in (torch.bfloat16, torch.float32):
            return F.linear(x, self.weight, self.bias)
        # The kernel is fast in bfloat16 only (its float32 path is a slow reference): float32 inputs are
        # rounded to bfloat16 for it, and its result comes back in float32.
        flat = x.reshape(rows, self.in_features).to(torch.bfloat16)
        scales = self.scale_bits.view(torch.bfloat16)
        out: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.codes, GROUP, scales)
        out = out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias


def use_four_bit(model: nn.Module) -> int:
    """Replace the linear layers of a float32 model whose weights are 4-bit; returns how many.

    Call before casting the model to bfloat16, if it is to be cast (the grid is checked on the float32
    values).
    """

    def convert(linear: nn.Linear) -> nn.Module | None:
        grid = four_bit_grid(linear.weight.detach())
        return FourBitLinear(linear, *grid) if grid is not None else None

    return replace_linears(model, convert)


def replace_linears(model: nn.Module, convert: Callable[[nn.Linear], nn.Module | None]) -> int:
    """Replace each plain ``nn.Linear`` of ``model`` by what ``convert`` makes of it (None: keep it);
    returns how many were replaced."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and (replacement := convert(child)) is not None:
                setattr(module, name, replacement)
                replaced += 1
    return replaced
