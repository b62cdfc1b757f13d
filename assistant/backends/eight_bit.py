"""Linear layers whose weights are 8-bit numbers, multiplied as 8-bit numbers on the CPU.

The bundled model's GGUF stores its token embedding, which is also its output layer, as Q8_0: every
weight is ``scale * code`` with an 8-bit ``code`` and one ``scale`` per group of 32 inputs. That layer
is the largest of the model (49,152 x 576), and a decoding step multiplies every row of it: in float32
it took a third of a batch-8 step. torch's 8-bit weight-only kernel (``_weight_int8pack_mm``) reads
the codes, a quarter of float32's bytes, but has one scale per output, not per group; so the product is
taken group by group (18 products of 32 inputs, each with its group's scales) and summed in float32.
The result is the Q8_0 layer's, with the inputs and scales rounded to bfloat16 (as the 4-bit layers'
are, ``four_bit``). On a 2-core AVX2 EPYC: 4.8 ms against float32's 10.2 at 1 row, 13.4 against 26.7
at 8. Where bfloat16 products are native (AVX512-BF16, AMX) and the model runs in bfloat16, the full
weight is the faster from 2 rows on, and the layer stays as it is (``hf.eight_bit_output_pays``).

As for the 4-bit layers, only weights that lie exactly on such a grid are converted, nothing is
quantized, and many rows (more than ``MAX_KERNEL_ROWS``) use the full weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from assistant.backends.four_bit import replace_linears

__all__ = ["GROUP", "MAX_KERNEL_ROWS", "EightBitLinear", "eight_bit_grid", "use_eight_bit"]

#: Inputs per scale (Q8_0's block).
GROUP = 32
#: Up to this many rows the grouped 8-bit products are the faster ones here (they tie at about 12).
MAX_KERNEL_ROWS = 8


def eight_bit_grid(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The 8-bit codes ``[out, in]`` and per-group scales ``[out, groups]`` of a float32 weight that is
    exactly ``scale * code`` in every group of ``GROUP`` inputs, the largest code 127; None if not."""
    outputs, inputs = weight.shape
    if weight.dtype != torch.float32 or inputs % GROUP:
        return None
    groups = weight.view(outputs, inputs // GROUP, GROUP)
    scales = groups.abs().amax(dim=-1) / 127
    codes = (groups / torch.where(scales > 0, scales, 1.0).unsqueeze(-1)).round()
    if not torch.equal(codes * scales.unsqueeze(-1), groups):
        return None
    return codes.view(outputs, inputs).to(torch.int8), scales


class EightBitLinear(nn.Module):
    """``nn.Linear`` computed from 8-bit codes, group by group, for few rows; from the weight for many."""

    codes: torch.Tensor
    scale_bits: torch.Tensor

    def __init__(self, linear: nn.Linear, codes: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the same parameters: ties stay tied
        groups = self.in_features // GROUP
        # Per group: codes [out, GROUP] and scales [out], each contiguous, as the kernel takes them.
        by_group = codes.view(self.out_features, groups, GROUP).transpose(0, 1).contiguous()
        self.register_buffer("codes", by_group, persistent=False)
        # Kept as the bits of bfloat16 numbers: casting the model (to float32) leaves integers alone.
        bits = scales.t().contiguous().to(torch.bfloat16).view(torch.int16)
        self.register_buffer("scale_bits", bits, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows > MAX_KERNEL_ROWS or x.dtype not in (torch.bfloat16, torch.float32):
            return F.linear(x, self.weight, self.bias)
        groups = self.in_features // GROUP
        pieces = x.reshape(rows, groups, GROUP).transpose(0, 1).to(torch.bfloat16).contiguous()
        scales = self.scale_bits.view(torch.bfloat16)
        out = torch.zeros(rows, self.out_features, dtype=torch.float32)
        for group in range(groups):
            out += torch.ops.aten._weight_int8pack_mm(pieces[group], self.codes[group], scales[group])
        result = out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return result if self.bias is None else result + self.bias


def use_eight_bit(model: nn.Module) -> int:
    """Replace the linear layers of a float32 model whose weights are 8-bit; returns how many.

    Call before casting the model, as ``four_bit.use_four_bit``.
    """
    if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        return 0

    def convert(linear: nn.Linear) -> nn.Module | None:
        grid = eight_bit_grid(linear.weight.detach())
        return EightBitLinear(linear, *grid) if grid is not None else None

    return replace_linears(model, convert)
