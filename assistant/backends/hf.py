"""Hugging Face transformers, in-process.

The model loads once (in a thread, so the server answers ``/healthz`` meanwhile). Concurrent requests
are generated together by one continuous-batching loop on its own thread (``batching.Batcher``), off the
event loop; tokens are handed to the loop as they are produced. Closing a stream marks its request
cancelled, and it leaves the batch at the next decoding step, so a client that goes away stops its
generation within one step.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.backends.base import (
    Backend,
    BackendNotReady,
    BatchStats,
    Event,
    GenerationOptions,
    Message,
    ModelDescription,
    TextPiece,
)
from assistant.backends.batching import END, Batcher, Request
from assistant.own_thread import run_in_own_thread

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class HFBackend(Backend):
    def __init__(
        self,
        model_source: Callable[[], str],
        *,
        context_window: int | None = None,
        max_batch: int = 16,
        max_queued: int = 64,
        queue_timeout: float = 120.0,
        prefix_cache_size: int = 8,
        threads: int | None = None,
        dtype: str = "auto",
        four_bit: bool = True,
    ) -> None:
        self._model_source = model_source
        self._configured_window = context_window
        self._max_batch, self._max_queued, self._queue_timeout = max_batch, max_queued, queue_timeout
        self._prefix_cache_size = prefix_cache_size
        self._threads = threads or torch_default_threads()
        self._dtype = dtype
        self._four_bit = four_bit
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._batcher: Batcher | None = None
        self._load_error: str | None = None
        self._description: ModelDescription | None = None
        #: Tokens produced since start: lets tests and metrics see that generation stopped.
        self.tokens_generated = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._model is not None:
            return
        try:
            await run_in_own_thread(self._load, "hf-load")  # not the executor's: see own_thread
        except Exception as exc:
            self._load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self._load_error)

    def _load(self) -> None:
        from transformers import AutoTokenizer

        source = self._model_source()
        self._tokenizer = AutoTokenizer.from_pretrained(source)
        model, converted = load_model(source, self._dtype, four_bit=self._four_bit)
        self._batcher = Batcher(
            model,
            self._tokenizer,
            max_batch=self._max_batch,
            max_waiting=self._max_queued,
            queue_timeout=self._queue_timeout,
            prefix_cache_size=self._prefix_cache_size,
            threads=self._threads,
            on_token=self._count_token,
        )
        self._model = model
        self._description = ModelDescription(
            architecture=str(model.config.model_type),
            parameters=sum(p.numel() for p in model.parameters()),
            dtype=str(model.dtype).removeprefix("torch."),
            low_bit_layers=converted,
            directory=source if Path(source).is_dir() else None,
        )
        log.info("model loaded from %s", source)

    def describe(self) -> ModelDescription | None:
        return self._description

    async def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()

    def batch_stats(self) -> BatchStats | None:
        """Requests waiting for and running in the batch (None until the model is loaded)."""
        return self._batcher.stats() if self._batcher is not None else None

    def _count_token(self, request: Request) -> None:
        self.tokens_generated += 1

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def not_ready_reason(self) -> str:
        if self._load_error:
            return f"the model failed to load: {self._load_error}"
        return "the model is loading"

    @property
    def context_window(self) -> int:
        model_max = int(getattr(self._loaded()[0].config, "max_position_embeddings", 2048))
        return min(model_max, self._configured_window or model_max)

    def _loaded(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        if self._model is None or self._tokenizer is None:
            raise BackendNotReady(self.not_ready_reason)
        return self._model, self._tokenizer

    # -- generation ----------------------------------------------------------------------------

    def prompt_ids(self, messages: list[Message], *, generation_prompt: bool = True) -> list[int]:
        tokenizer = self._loaded()[1]
        conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
        text = tokenizer.apply_chat_template(
            conversation, add_generation_prompt=generation_prompt, tokenize=False
        )
        ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def shared_prefix(self, messages: list[Message], prompt: list[int]) -> int:
        """How many leading tokens of ``prompt`` are its system message alone (0 when it has none, or the
        template does not render it as a prefix of the whole): the part other chats share."""
        if len(messages) < 2 or messages[0]["role"] != "system":
            return 0
        system = self.prompt_ids(messages[:1], generation_prompt=False)
        return len(system) if len(system) < len(prompt) and prompt[: len(system)] == system else 0

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.prompt_ids(messages))

    async def stream(
        self, messages: list[Message], options: GenerationOptions
    ) -> AsyncGenerator[Event, None]:
        self._loaded()
        assert self._batcher is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()

        def post(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        prompt = self.prompt_ids(messages)
        request = Request(prompt, options, post, shared_prefix=self.shared_prefix(messages, prompt))
        self._batcher.submit(request)  # BackendOverloaded when the queue is full
        try:
            async for item in _arrivals(queue):
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            request.cancelled.set()


async def _arrivals(queue: asyncio.Queue[object]) -> AsyncGenerator[object, None]:
    """The queue's items; text pieces that piled up while the event loop was busy go on as one, so a
    busy loop catches up: one pass of the pipeline's checks for them all instead of one each."""
    while True:
        items = [await queue.get()]
        while not queue.empty():
            items.append(queue.get_nowait())
        merged: list[object] = []
        for item in items:
            last = merged[-1] if merged else None
            if isinstance(item, TextPiece) and isinstance(last, TextPiece):
                merged[-1] = TextPiece(last.text + item.text, item.completion_tokens)
            else:
                merged.append(item)
        for item in merged:
            yield item


@functools.cache
def torch_default_threads() -> int:
    """PyTorch's intra-op thread count as this process started with it, read once.

    The count is process-wide for threads that have not run a parallel operation yet: a thread that
    sets its own (the semantic detector's worker sets one) changes it for every such thread after it.
    So the model's thread sets its count itself, and the default is read before that can happen.

    Unset, ``model.threads`` is this: every core decodes. (An earlier default left one core to the
    service's own Python for a bfloat16 model; what made a second decoding thread look slow was the
    model loaded on an executor thread, see ``own_thread``. Measured since through the API on a 2-core
    AVX512-BF16 EPYC, bfloat16: 2 threads 151 tokens/s at 8 streams against 1 thread's 119, and 46
    against 36 at one stream.)
    """
    import torch

    return torch.get_num_threads()


def weights_dtype(name: str) -> torch.dtype:
    """The torch dtype for ``model.dtype``; ``auto`` is bfloat16 where the hardware computes it fast.

    On a CPU that is oneDNN's bfloat16 matmul (AVX-512 or AMX; measured on the default model with
    AVX512-BF16: 1.9x the tokens/s of float32); elsewhere (AVX2 only) bfloat16 would be emulated, slower.
    """
    import torch

    if name != "auto":
        return getattr(torch, name)  # type: ignore[no-any-return]
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if fast_bfloat16() else torch.float32


def fast_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively: the check torch's own bfloat16 matmul
    dispatch makes (private: absent, it counts as slow)."""
    import torch

    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return mkldnn and supported is not None and bool(supported())


def eight_bit_output_pays(dtype: torch.dtype) -> bool:
    """Whether the output layer decodes faster from its 8-bit codes than from its full weight.

    Yes in float32, and in bfloat16 computed slowly; no in bfloat16 on a CPU that computes it natively:
    on a 2-core AVX512-BF16 EPYC the grouped 8-bit products took 4.4 ms against bfloat16's 6.3 at 1 row,
    but 13.6 against 7.4 at 4 rows and 29.1 against 8.1 at 8 (a third of a batch-8 step). The layer
    keeps one path at every batch size rather than switching at some row count.
    """
    return not native_cpu_bfloat16(dtype)


def native_cpu_bfloat16(dtype: torch.dtype) -> bool:
    """Whether a model in ``dtype`` runs in bfloat16 on a CPU that computes bfloat16 natively."""
    import torch

    return dtype == torch.bfloat16 and not torch.cuda.is_available() and fast_bfloat16()


def load_model(source: str, dtype_name: str, *, four_bit: bool = True) -> tuple[PreTrainedModel, int]:
    """The model in ``model.dtype``'s precision, ready for inference, and how many of its linear layers
    decode from their low-bit weights (with ``four_bit``, where they are exactly 4-bit or 8-bit:
    ``four_bit.FourBitLinear``, ``eight_bit.EightBitLinear``)."""
    import torch
    from transformers import AutoModelForCausalLM

    from assistant.backends import cpu_attention
    from assistant.backends.eight_bit import use_eight_bit
    from assistant.backends.four_bit import use_four_bit

    dtype, converted = weights_dtype(dtype_name), 0
    if four_bit and four_bit_candidate(source, dtype):
        # The grids show only in the stored float32 values: load those, convert, then cast (if).
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        four = use_four_bit(model)
        eight = use_eight_bit(model) if eight_bit_output_pays(dtype) else 0
        if converted := four + eight:
            log.info("%d linear layers decode from their 4-bit weights, %d from 8-bit ones", four, eight)
        model.to(dtype)  # type: ignore[arg-type]  # transformers types its `to` wrapper badly
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if model.device.type == "cpu" and model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(cpu_attention.register())
    model.eval()  # type: ignore[no-untyped-call]
    return model, converted


def four_bit_candidate(source: str, dtype: torch.dtype) -> bool:
    """Whether a model may hold 4-bit linear weights worth the CPU kernel: served in bfloat16 or float32
    on the CPU, and stored in float32 (a GGUF's expanded weights are; the grid does not survive bfloat16)."""
    import torch
    from transformers import AutoConfig

    from assistant.backends.four_bit import kernel_available

    served = dtype in (torch.bfloat16, torch.float32)
    if not served or torch.cuda.is_available() or not kernel_available():
        return False
    config = AutoConfig.from_pretrained(source)
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return stored in (torch.float32, "float32")
