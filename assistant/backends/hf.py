"""Hugging Face transformers, in-process.

The model loads once (in a thread, so the server answers ``/healthz`` meanwhile). Generations run
one at a time on a dedicated thread, off the event loop; tokens are handed to the loop as they are
produced. Closing a stream sets a flag that a stopping criterion checks after every token, so a
client that goes away stops its generation within one decoding step.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.backends.base import (
    Backend,
    BackendNotReady,
    BackendOverloaded,
    Event,
    Finished,
    FinishReason,
    GenerationOptions,
    Message,
    ModelDescription,
    TextPiece,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_END = object()


class _TokenSink:
    """A transformers streamer: decodes new tokens and posts text to the event loop."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, post: Callable[[object], None]) -> None:
        self._tokenizer = tokenizer
        self._post = post
        self._seen_prompt = False
        self.tokens: list[int] = []
        self._sent = 0

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:  # generate() first hands over the prompt
            self._seen_prompt = True
            return
        self.tokens.extend(value.reshape(-1).tolist())
        text = str(self._tokenizer.decode(self.tokens, skip_special_tokens=True))
        # An incomplete UTF-8 sequence decodes to U+FFFD: wait for the token that completes it.
        if len(text) > self._sent and not text.endswith("\ufffd"):
            self._post(TextPiece(text[self._sent :], completion_tokens=len(self.tokens)))
            self._sent = len(text)

    def end(self) -> None:
        pass


class HFBackend(Backend):
    def __init__(
        self,
        model_source: Callable[[], str],
        *,
        context_window: int | None = None,
        max_queued: int = 64,
        threads: int | None = None,
    ) -> None:
        self._model_source = model_source
        self._configured_window = context_window
        self._max_queued = max_queued
        self._threads = threads
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-generate")
        self._pending = 0
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._load_error: str | None = None
        self._description: ModelDescription | None = None
        #: Tokens produced since start: lets tests and metrics see that generation stopped.
        self.tokens_generated = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._model is not None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        except Exception as exc:
            self._load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self._load_error)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self._threads:
            torch.set_num_threads(self._threads)
        source = self._model_source()
        self._tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
        model.eval()  # type: ignore[no-untyped-call]
        self._model = model
        self._description = ModelDescription(
            architecture=str(model.config.model_type),
            parameters=sum(p.numel() for p in model.parameters()),
            dtype=str(model.dtype).removeprefix("torch."),
            directory=source if Path(source).is_dir() else None,
        )
        log.info("model loaded from %s", source)

    def describe(self) -> ModelDescription | None:
        return self._description

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

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

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        tokenizer = self._loaded()[1]
        conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
        text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.prompt_ids(messages))

    async def stream(
        self, messages: list[Message], options: GenerationOptions
    ) -> AsyncGenerator[Event, None]:
        self._loaded()
        if self._pending >= self._max_queued:
            raise BackendOverloaded(f"{self._pending} requests are already waiting for the model")
        prompt = self.prompt_ids(messages)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def post(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        self._pending += 1
        future = loop.run_in_executor(self._executor, self._generate, prompt, options, post, stop)
        future.add_done_callback(self._job_done)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            stop.set()

    def _job_done(self, future: asyncio.Future[None]) -> None:
        self._pending -= 1
        if not future.cancelled() and future.exception() is not None:
            log.error("generation failed", exc_info=future.exception())

    def _generate(
        self,
        prompt: list[int],
        options: GenerationOptions,
        post: Callable[[object], None],
        stop: threading.Event,
    ) -> None:
        try:
            if not stop.is_set():
                post(self._run_generate(prompt, options, post, stop))
        except Exception as exc:
            post(exc)
        finally:
            post(_END)

    def _run_generate(
        self,
        prompt: list[int],
        options: GenerationOptions,
        post: Callable[[object], None],
        stop: threading.Event,
    ) -> Finished:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        model, tokenizer = self._loaded()
        sink = _TokenSink(tokenizer, post)
        backend = self

        class _StopWhenAsked(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                backend.tokens_generated += 1
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

        # Generations run one at a time on this thread, so seeding the global generator is exact.
        torch.manual_seed(options.seed if options.seed is not None else secrets.randbits(63))
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": options.temperature, "top_p": options.top_p, "top_k": 0}
            if options.temperature > 0
            else {"do_sample": False}
        )
        input_ids = torch.tensor([prompt])
        with torch.inference_mode():
            model.generate(  # type: ignore[operator]
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=options.max_tokens,
                streamer=sink,
                stopping_criteria=StoppingCriteriaList([_StopWhenAsked()]),
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                **sampling,
            )
        hit_eos = bool(sink.tokens) and sink.tokens[-1] in _eos_ids(model)
        reason: FinishReason = "length" if len(sink.tokens) >= options.max_tokens and not hit_eos else "stop"
        return Finished(reason, prompt_tokens=len(prompt), completion_tokens=len(sink.tokens))


def _eos_ids(model: PreTrainedModel) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos) if isinstance(eos, list) else {eos} if eos is not None else set()
