"""4-bit linear layers: found only where the weights are exactly 4-bit, computed as the full layer is (in
bfloat16 or float32), and on the real default model (with its 8-bit output layer) as close to the float32
model as bfloat16 weights are."""

from __future__ import annotations

import asyncio

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from assistant.backends import eight_bit, hf
from assistant.backends.base import GenerationOptions, TextPiece
from assistant.backends.four_bit import GROUP, MAX_KERNEL_ROWS, FourBitLinear, four_bit_grid, use_four_bit
from assistant.backends.hf import HFBackend, eight_bit_output_pays, load_model, weights_dtype


def grid_weight(outputs: int = 64, inputs: int = 4 * GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 weight that is ``low + step * code`` per group of inputs, as a Q4_1 GGUF's expands to."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (outputs, inputs), generator=generator)
    codes[:, ::GROUP], codes[:, 1::GROUP] = 0, 15  # every group spans the whole range, as Q4_1's do
    # Steps and lows in 1/4096ths: float32 holds them and the products exactly, as it holds a GGUF's.
    step = torch.randint(1, 64, (outputs, inputs // GROUP, 1), generator=generator) / 4096
    low = -8 * step + torch.randint(-16, 16, (outputs, inputs // GROUP, 1), generator=generator) / 4096
    weight = (codes.view(outputs, -1, GROUP) * step + low).view(outputs, inputs)
    return weight, codes


def test_the_grid_of_a_4bit_weight_is_found_exactly() -> None:
    weight, codes = grid_weight()
    grid = four_bit_grid(weight)
    assert grid is not None
    found, step_low = grid
    assert torch.equal(found, codes.to(torch.int32))
    assert step_low.shape == (64, 4, 2)


def test_weights_off_a_4bit_grid_are_left_alone() -> None:
    weight, _ = grid_weight()
    tuned = weight.clone()
    tuned[3, 5] += 1e-4  # one weight moved, as a merged fine-tune moves all of them
    assert four_bit_grid(tuned) is None
    assert four_bit_grid(torch.randn(8, 4 * GROUP)) is None
    assert four_bit_grid(weight[:, :40].contiguous()) is None  # inputs not a multiple of the group
    assert four_bit_grid(weight.to(torch.bfloat16)) is None  # rounded: the grid is not exact any more

    on_grid, off_grid = nn.Linear(4 * GROUP, 64, bias=False), nn.Linear(4 * GROUP, 64, bias=False)
    with torch.no_grad():
        on_grid.weight.copy_(weight)
        off_grid.weight.copy_(tuned)
    model = nn.Sequential(on_grid, off_grid)
    assert use_four_bit(model) == 1
    assert isinstance(model[0], FourBitLinear) and type(model[1]) is nn.Linear


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, 8, MAX_KERNEL_ROWS, MAX_KERNEL_ROWS + 1, 60])
def test_a_4bit_layer_computes_what_the_full_layer_does(rows: int, dtype: torch.dtype) -> None:
    weight, _ = grid_weight()
    linear = nn.Linear(4 * GROUP, 64)
    with torch.no_grad():
        linear.weight.copy_(weight)
    grid = four_bit_grid(weight)
    assert grid is not None
    four_bit = FourBitLinear(linear, *grid).to(dtype)
    linear = linear.to(dtype)
    x = torch.randn(1, rows, 4 * GROUP).to(dtype)
    with torch.inference_mode():
        expected, got = linear(x).float(), four_bit(x)
    assert got.shape == (1, rows, 64) and got.dtype == dtype
    got = got.float()
    if rows > MAX_KERNEL_ROWS:
        assert torch.equal(got, expected)  # many rows: the full weight itself
    else:  # the 4-bit kernel: the same weights, rounded differently (bfloat16 keeps 8 significant bits)
        assert torch.allclose(got, expected, rtol=0.02, atol=0.02 * float(expected.abs().max()))


SUPPORT_TEXTS = [
    "Hello, my parcel has not arrived yet and the tracking page shows no update since Monday.",
    "To reset your password, open the login page and click on the link that says forgot password.",
    "We ship to Canada and most of Europe; delivery usually takes five to seven working days.",
    "I would like a refund for the blue jacket I returned last week, order number 4471.",
]


def teacher_forced(
    model: PreTrainedModel, texts: list[str], tokenizer: PreTrainedTokenizerBase
) -> torch.Tensor:
    """Log-probabilities at every position of each text, in one forward pass (at most 32 rows each, so
    the 4-bit layers use their kernel): ``[tokens, vocabulary]``."""
    rows = []
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            assert ids.shape[1] <= MAX_KERNEL_ROWS
            rows.append(model(input_ids=ids).logits[0].float().log_softmax(dim=-1))
    return torch.cat(rows)


@pytest.mark.model
@pytest.mark.parametrize("served", ["bfloat16", "float32"])
def test_4bit_decoding_of_the_default_model_is_as_close_to_float32_as_bfloat16(
    hf_backend: HFBackend, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per token, the 4-bit layers and the 8-bit output layer (in a bfloat16 or a float32 model) pick
    float32's most likely next token about as often as bfloat16 weights do, and their distributions are
    about as close (``bench/precision.py`` measures it at length)."""
    monkeypatch.setattr(eight_bit, "MAX_KERNEL_ROWS", MAX_KERNEL_ROWS)  # a whole text's rows on its kernel
    source = hf_backend._model_source()
    tokenizer = AutoTokenizer.from_pretrained(source)
    reference = teacher_forced(load_model(source, "float32", four_bit=False)[0], SUPPORT_TEXTS, tokenizer)
    four_bit, converted = load_model(source, served)
    # Every q, k, v, o, gate, up and down projection of the 30 layers; and the output layer (Q8_0), still
    # the token embedding's weight, where its 8-bit products are the faster.
    eight = eight_bit_output_pays(weights_dtype(served))
    assert converted == 30 * 7 + eight
    output = four_bit.get_output_embeddings()
    assert isinstance(output, eight_bit.EightBitLinear) == eight
    assert output.weight is four_bit.get_input_embeddings().weight
    half, none = load_model(source, "bfloat16", four_bit=False)
    assert none == 0

    def closeness(model: PreTrainedModel) -> tuple[float, float]:
        got = teacher_forced(model, SUPPORT_TEXTS, tokenizer)
        agreement = float((got.argmax(-1) == reference.argmax(-1)).float().mean())
        divergence = float(F.kl_div(got, reference, log_target=True, reduction="batchmean"))
        return agreement, divergence

    (agree_4bit, kl_4bit), (agree_half, kl_half) = closeness(four_bit), closeness(half)
    # Measured here: 93.5% and 94.8% of 77 tokens; KL 0.00137 and 0.00140.
    assert agree_half >= 0.85 and agree_4bit >= agree_half - 0.05
    assert kl_4bit < 2 * kl_half + 1e-4


@pytest.mark.model
@pytest.mark.parametrize("native", [True, False])
def test_a_bfloat16_model_keeps_its_output_layer_where_bfloat16_products_are_native(
    hf_backend: HFBackend, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hf, "fast_bfloat16", lambda: native)
    model, converted = load_model(hf_backend._model_source(), "bfloat16")
    output = model.get_output_embeddings()
    assert isinstance(output, eight_bit.EightBitLinear) != native
    assert converted == 30 * 7 + (not native)
    assert eight_bit_output_pays(torch.float32)  # float32's weight is 4 bytes: the 8-bit codes win


@pytest.mark.model
def test_the_backend_describes_its_4bit_layers_and_can_do_without(hf_backend: HFBackend) -> None:
    async def described(four_bit: bool) -> tuple[int, str]:
        backend = HFBackend(hf_backend._model_source, four_bit=four_bit)  # bfloat16 or float32
        await backend.start()
        try:
            description = backend.describe()
            assert description is not None
            options = GenerationOptions(max_tokens=6, temperature=0)
            events = backend.stream([{"role": "user", "content": "Hi!"}], options)
            text = "".join([event.text async for event in events if isinstance(event, TextPiece)])
            return description.low_bit_layers, text
        finally:
            await backend.close()

    (with_layers, with_text), (without_layers, without_text) = (
        asyncio.run(described(True)),
        asyncio.run(described(False)),
    )
    eight = eight_bit_output_pays(weights_dtype("auto"))
    assert (with_layers, without_layers) == (30 * 7 + eight, 0)
    assert with_text and with_text == without_text  # "Hello! How can I assist": no near tie there
